//! Subcommands of the `shredstore` binary that live outside `main.rs`.

pub(crate) mod backup;
