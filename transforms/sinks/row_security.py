"""Row-level security for the PostgreSQL sink's table: each tenant's readers see that tenant's rows.

Declared on the sink (``UpsertPostgres(..., row_security=RowSecurity(...))``, or the spec's
``row_security`` config) and set up with the table, in one transaction under an advisory lock
(workers start at once):

- ``ENABLE`` and ``FORCE ROW LEVEL SECURITY``: forced, so the table's owner, the role the
  pipeline connects as, goes through policies too; its own policy (``bp_writer``) lets it read
  and write every row. A superuser would bypass them all: run the pipeline as a plain role.
- ``roles``: tenant value -> role. Each role is created when missing (``NOLOGIN``; grant it to
  the people or services of that tenant), granted ``SELECT`` and given a policy
  (``bp_read_<role>``) showing only rows whose tenant column holds its value. Creating a role
  needs ``CREATEROLE``; roles that exist already need nothing.
- ``shared_role``: one role for a trusted application that serves many tenants over a pool: it
  sees the rows of the tenant named by the session setting ``beam_pipelines.tenant``
  (``SET beam_pipelines.tenant = 'acme'``), and none while it is unset.

The tenant column must be a key column: two tenants' rows with the same other keys stay two
rows. A row whose tenant is null is stored with ``''`` (as any null key) and seen by no tenant.
Values and names go into the DDL as quoted literals and identifiers, never as text pasted in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["SETTING", "RowSecurity"]

SETTING = "beam_pipelines.tenant"
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,54}$")  # leaves room for the policy name's prefix


@dataclass(frozen=True)
class RowSecurity:
    """Which column names the tenant, and which roles read which tenant's rows."""

    column: str
    roles: dict[str, str] = field(default_factory=dict)
    shared_role: str | None = None

    def __post_init__(self):
        if not isinstance(self.column, str) or not self.column:
            raise ValueError("row_security.column must name the tenant column")
        if not isinstance(self.roles, dict):
            raise ValueError("row_security.roles must map tenant values to role names")
        named = [*self.roles.values(), *([self.shared_role] if self.shared_role is not None else [])]
        for tenant in self.roles:
            if not isinstance(tenant, str) or not tenant:
                raise ValueError(f"row_security.roles: tenant values must be non-empty strings, got {tenant!r}")
        for role in named:
            if not isinstance(role, str) or not _ROLE.fullmatch(role):
                raise ValueError(f"row_security: role {role!r} must match {_ROLE.pattern}")
        if len(set(named)) < len(named):
            raise ValueError("row_security: each role reads one tenant (or, as shared_role, the session's)")
        if not named:
            raise ValueError("row_security needs roles, a shared_role or both: otherwise nobody but the writer reads")

    def statements(self, table: str) -> list:
        """The DDL after ``CREATE TABLE`` (psycopg ``sql`` objects), safe to run again."""
        from psycopg import sql

        t, col = sql.Identifier(table), sql.Identifier(self.column)
        out = [
            sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(sql.Literal(f"row_security:{table}")),
            sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t),
            sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(t),
            sql.SQL("DROP POLICY IF EXISTS bp_writer ON {}").format(t),
            sql.SQL("CREATE POLICY bp_writer ON {} TO CURRENT_USER USING (true) WITH CHECK (true)").format(t),
        ]
        readers = [(role, sql.SQL("{} = {}").format(col, sql.Literal(tenant))) for tenant, role in self.roles.items()]
        if self.shared_role is not None:
            # current_setting(..., true) is null while unset: no rows.
            setting = sql.SQL("{} = current_setting({}, true)").format(col, sql.Literal(SETTING))
            readers.append((self.shared_role, setting))
        for role, visible in readers:
            r, policy = sql.Identifier(role), sql.Identifier(f"bp_read_{role}")
            out += [
                sql.SQL("GRANT SELECT ON {} TO {}").format(t, r),
                sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(policy, t),
                sql.SQL("CREATE POLICY {} ON {} FOR SELECT TO {} USING ({})").format(policy, t, r, visible),
            ]
        return out

    def missing_roles(self, cur) -> list[str]:
        """The declared roles the server does not have yet."""
        wanted = sorted({*self.roles.values(), *([self.shared_role] if self.shared_role else [])})
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))
        have = {r[0] for r in cur.fetchall()}
        return [r for r in wanted if r not in have]

    def create_roles(self, cur, table: str) -> None:
        """Creates missing roles, then the policies (one transaction, the caller's)."""
        import psycopg
        from psycopg import sql

        for stmt in self.statements(table)[:1]:  # the lock first: workers start at once
            cur.execute(stmt)
        for role in self.missing_roles(cur):
            try:
                cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            except psycopg.errors.InsufficientPrivilege as e:
                raise PermissionError(
                    f"row security on {table}: cannot create role {role!r} (the sink's role needs CREATEROLE, "
                    f"or create the role first): {str(e).strip().splitlines()[0]}"
                ) from e
        for stmt in self.statements(table)[1:]:
            cur.execute(stmt)
