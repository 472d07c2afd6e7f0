"""Revisions: every change to a label pair is kept (who, when, what, the state after it); deleting keeps the row.

Each existing label pair gets revision 1, its state as found, by its annotator at its last modification.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('label_pairs', sa.Column('revision', sa.Integer(), server_default='1', nullable=False))
    op.add_column('label_pairs', sa.Column('modified_by', sa.String(), server_default='', nullable=False))
    op.add_column('label_pairs', sa.Column('deleted', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('revisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('label_pair_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(), nullable=False),
    sa.Column('author', sa.String(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('type', sa.String(), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('moving_mask_id', sa.Integer(), nullable=True),
    sa.Column('fixed_mask_id', sa.Integer(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['fixed_mask_id'], ['masks.id'], ),
    sa.ForeignKeyConstraint(['label_pair_id'], ['label_pairs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['moving_mask_id'], ['masks.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('label_pair_id', 'number')
    )
    op.execute("UPDATE label_pairs SET modified_by = annotator")
    op.execute("INSERT INTO revisions (label_pair_id, number, action, author, at, type, name, status, moving_mask_id, "
               "fixed_mask_id, deleted) SELECT id, 1, 'as found by the upgrade', annotator, modified, type, name, "
               "status, moving_mask_id, fixed_mask_id, deleted FROM label_pairs")


def downgrade() -> None:
    op.drop_table('revisions')
    with op.batch_alter_table('label_pairs') as batch:
        batch.drop_column('deleted')
        batch.drop_column('modified_by')
        batch.drop_column('revision')

