//! Subcommands of the `shredstore` binary that live outside `main.rs`.

pub(crate) mod backup;
pub(crate) mod ledger;

/// `--user-id` or `--user-id-base64`.
#[derive(clap::Args)]
pub(crate) struct UserIdArg {
    /// The user id (UTF-8).
    #[arg(
        long,
        conflicts_with = "user_id_base64",
        required_unless_present = "user_id_base64"
    )]
    user_id: Option<String>,
    /// The user id as standard base64 (for ids that are not UTF-8).
    #[arg(long)]
    user_id_base64: Option<String>,
}

impl UserIdArg {
    pub(crate) fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match (&self.user_id, &self.user_id_base64) {
            (Some(s), _) => Ok(s.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| "--user-id-base64 is not valid base64".to_owned()),
            (None, None) => Err("give --user-id or --user-id-base64".into()),
        }
    }
}
