"""Restore: the plan, the playbook, typed steps, the one object opener, the tar
guard, the shell texts sent to a target, and the step runner.

`vkbackup.actions.restore` orchestrates a restore with these parts; drill and
`verify --deep` reuse them. Nothing here imports an action.
"""
