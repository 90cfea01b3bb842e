//! Migrations embedded in the binary, one set per backend, so `connectors migrate` and
//! start-up need no files beside the executable.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// `(version, description, sql)` of one migration.
type Embedded = (i64, &'static str, &'static str);

const SQLITE: &[Embedded] = &[
    (
        1,
        "initial schema",
        include_str!("../../migrations/sqlite/0001_initial_schema.sql"),
    ),
    (
        2,
        "sync follow-up",
        include_str!("../../migrations/sqlite/0002_sync_follow_up.sql"),
    ),
    (
        3,
        "connection provider state",
        include_str!("../../migrations/sqlite/0003_connection_provider_state.sql"),
    ),
    (
        4,
        "subscriptions",
        include_str!("../../migrations/sqlite/0004_subscriptions.sql"),
    ),
    (
        5,
        "connect binding",
        include_str!("../../migrations/sqlite/0005_connect_binding.sql"),
    ),
    (
        6,
        "push",
        include_str!("../../migrations/sqlite/0006_push.sql"),
    ),
    (
        7,
        "tenant turns",
        include_str!("../../migrations/sqlite/0007_tenant_turns.sql"),
    ),
    (
        8,
        "connections due",
        include_str!("../../migrations/sqlite/0008_connections_due.sql"),
    ),
    (
        9,
        "push fan out",
        include_str!("../../migrations/sqlite/0009_push_fan_out.sql"),
    ),
    (
        10,
        "push deliveries by tenant",
        include_str!("../../migrations/sqlite/0010_push_deliveries_by_tenant.sql"),
    ),
    (
        11,
        "webhook event bodies",
        include_str!("../../migrations/sqlite/0011_webhook_event_bodies.sql"),
    ),
    (
        12,
        "push numbering",
        include_str!("../../migrations/sqlite/0012_push_numbering.sql"),
    ),
];

const POSTGRES: &[Embedded] = &[
    (
        1,
        "initial schema",
        include_str!("../../migrations/postgres/0001_initial_schema.sql"),
    ),
    (
        2,
        "sync follow-up",
        include_str!("../../migrations/postgres/0002_sync_follow_up.sql"),
    ),
    (
        3,
        "connection provider state",
        include_str!("../../migrations/postgres/0003_connection_provider_state.sql"),
    ),
    (
        4,
        "subscriptions",
        include_str!("../../migrations/postgres/0004_subscriptions.sql"),
    ),
    (
        5,
        "connect binding",
        include_str!("../../migrations/postgres/0005_connect_binding.sql"),
    ),
    (
        6,
        "push",
        include_str!("../../migrations/postgres/0006_push.sql"),
    ),
    (
        7,
        "tenant turns",
        include_str!("../../migrations/postgres/0007_tenant_turns.sql"),
    ),
    (
        8,
        "connections due",
        include_str!("../../migrations/postgres/0008_connections_due.sql"),
    ),
    (
        9,
        "push fan out",
        include_str!("../../migrations/postgres/0009_push_fan_out.sql"),
    ),
    (
        10,
        "push fill factor",
        include_str!("../../migrations/postgres/0010_push_fill_factor.sql"),
    ),
    (
        11,
        "push unnumbered",
        include_str!("../../migrations/postgres/0011_push_unnumbered.sql"),
    ),
    (
        12,
        "push deliveries by tenant",
        include_str!("../../migrations/postgres/0012_push_deliveries_by_tenant.sql"),
    ),
    (
        13,
        "push numbering",
        include_str!("../../migrations/postgres/0013_push_numbering.sql"),
    ),
];

fn migrator(embedded: &[Embedded]) -> Migrator {
    let migrations = embedded
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        // During a rolling upgrade a newer release migrates the database while instances of
        // this one still run, and one of them may restart: it must start on a database that
        // has migrations it does not know (they are additive; docs/operations.md lists them).
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

/// The SQLite migrations.
pub fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// The PostgreSQL migrations.
pub fn postgres() -> Migrator {
    migrator(POSTGRES)
}

/// The newest migration version of a set; `/readyz` expects the database to have it.
pub fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}
