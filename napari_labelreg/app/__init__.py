"""The Qt-free application layer: the widgets' plain-function twins (annotation sessions, inspection,
training and export jobs, the demo, user settings)."""
