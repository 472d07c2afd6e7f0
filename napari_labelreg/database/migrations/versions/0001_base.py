"""The base revision: the schema of release 0.1 (``meta`` schema version 1), frozen here as it was.

A database made before migrations were Alembic's holds exactly this schema and is stamped with this
revision when it is first opened; a new database is made by running it.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('masks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shape', sa.String(), nullable=False),
    sa.Column('offset', sa.String(), nullable=False),
    sa.Column('box', sa.String(), nullable=False),
    sa.Column('voxels', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('meta',
    sa.Column('key', sa.String(), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('image_pairs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('moving_path', sa.Text(), nullable=False),
    sa.Column('moving_sha256', sa.String(length=64), nullable=False),
    sa.Column('moving_shape', sa.String(), nullable=False),
    sa.Column('moving_spacing', sa.String(), nullable=False),
    sa.Column('moving_affine', sa.Text(), nullable=False),
    sa.Column('fixed_path', sa.Text(), nullable=False),
    sa.Column('fixed_sha256', sa.String(length=64), nullable=False),
    sa.Column('fixed_shape', sa.String(), nullable=False),
    sa.Column('fixed_spacing', sa.String(), nullable=False),
    sa.Column('fixed_affine', sa.Text(), nullable=False),
    sa.Column('convention', sa.String(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("convention IN ('world', 'centred', 'fov')", name='valid_convention'),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_index(op.f('ix_image_pairs_subject_id'), 'image_pairs', ['subject_id'], unique=False)
    op.create_table('label_pairs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_pair_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('annotator', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('verifier', sa.String(), nullable=True),
    sa.Column('verified', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified', sa.DateTime(timezone=True), nullable=False),
    sa.Column('moving_mask_id', sa.Integer(), nullable=True),
    sa.Column('fixed_mask_id', sa.Integer(), nullable=True),
    sa.Column('moving_volume_mm3', sa.Float(), nullable=True),
    sa.Column('fixed_volume_mm3', sa.Float(), nullable=True),
    sa.CheckConstraint("status = 'incomplete' OR (moving_mask_id IS NOT NULL AND fixed_mask_id IS NOT NULL)", name='complete_pairs_have_both_masks'),
    sa.CheckConstraint("status IN ('incomplete', 'complete', 'verified')", name='valid_status'),
    sa.CheckConstraint("type IN ('gland', 'apex', 'base', 'urethra', 'zonal boundary', 'calcification', 'cyst', 'lesion', 'other')", name='valid_type'),
    sa.ForeignKeyConstraint(['fixed_mask_id'], ['masks.id'], ),
    sa.ForeignKeyConstraint(['image_pair_id'], ['image_pairs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['moving_mask_id'], ['masks.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('image_pair_id', 'position')
    )
    op.create_index(op.f('ix_label_pairs_image_pair_id'), 'label_pairs', ['image_pair_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_label_pairs_image_pair_id'), table_name='label_pairs')
    op.drop_table('label_pairs')
    op.drop_index(op.f('ix_image_pairs_subject_id'), table_name='image_pairs')
    op.drop_table('image_pairs')
    op.drop_table('subjects')
    op.drop_table('meta')
    op.drop_table('masks')
