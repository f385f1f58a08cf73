//! `shredstore load`: a gRPC load generator for a running server.
//!
//! Workers (one connection each) send a weighted mix of Append, Read and
//! Erase requests for Zipf-distributed users, either as fast as responses
//! come back (closed loop) or at a fixed total rate (open loop, `--rate`).
//! With `--stream`, appends go over one long-lived AppendStream per worker
//! with a bounded in-flight window. Every payload carries a checksum over the
//! user id and its contents, and every message read back is verified.
//!
//! Conversation mode (`--conversations N`, [`LoadConfig::conversations`];
//! 0, the default, keeps the per-user mode above) sends the mix to the
//! Conversations service instead: each request is for one of `N`
//! conversations picked with the same Zipf exponent (`--zipf`) and one of
//! its `K` authors (`--authors-per-conversation`, default 5) picked
//! uniformly; conversation `c` is `{prefix}{c}` and its author `a` the user
//! `{prefix}{c}-author-{a}` (`--conversation-prefix`, default `load-conv-`;
//! see [`ConversationPicker`]). The operations keep their names in the
//! report and the JSON:
//! - `append`: `Conversations.Append` by the author (one request on a
//!   per-worker `Conversations.AppendStream` with `--stream`), the payload
//!   checksummed over the author id;
//! - `read`: `Conversations.Read` backward from the newest (`from_seq` 0) of
//!   `--conversation-read-limit` items (default 50). The read fails as a
//!   `VERIFY` error unless its items come newest first (seqs strictly
//!   decreasing), at most the limit, and every message is by one of that
//!   conversation's authors with an intact payload; tombstones are allowed
//!   and counted ([`LoadReport::tombstones_read`]);
//! - `erase`: `Store.Erase` of the author (not blocked), so their messages
//!   in every conversation read as tombstones from then on.
//!
//! `--users`, `--user-prefix` and `--read-limit` do not apply there; the
//! report's `users` is then the number of distinct authors (`N * K`).
//! `--embedded` works in both modes (conversation mode through
//! [`Store::conversation`](crate::Store::conversation)).
//!
//! Latency is recorded in HdrHistograms (microseconds, 1 µs..60 s, 3
//! significant figures):
//! - closed loop, unary: from just before the call to its last response
//!   message;
//! - closed loop, stream: from the moment the append is handed to the stream
//!   (after a window slot is free) to its response;
//! - open loop (`--rate R`): request *i* is due at `start + i/R`, and latency
//!   runs from that due time, so time spent waiting for a free worker or
//!   window slot counts (no coordinated omission, as in wrk2).
//!
//! ```no_run
//! # async fn demo() -> Result<(), shredstore::load::LoadError> {
//! use shredstore::load::{LoadConfig, RunLimit, run};
//!
//! let config = LoadConfig {
//!     limit: RunLimit::Requests(10_000),
//!     stream: true,
//!     ..LoadConfig::new("http://127.0.0.1:50051")
//! };
//! let report = run(config).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod connect;
mod conversations;
mod mix;
mod payload;
mod plot;
mod report;
mod runner;
mod users;

use std::path::PathBuf;
use std::time::Duration;

pub use connect::{AdminGrpc, Bearer, Client, code_name, connect_admin, connect_client};
pub use conversations::{ConversationPicker, author_id, conversation_id};
pub use mix::{Mix, MixError, Op};
pub use payload::{PAYLOAD_HEADER_LEN, PAYLOAD_MAGIC, VerifyError, build_payload, verify_payload};
pub use plot::{render_svg, write_svg};
pub use report::{
    CurvePoint, LATENCY_MAX_US, LATENCY_MIN_US, LATENCY_SIGFIG, LatencySummary, LoadReport,
    OpReport, TimelineBucket, VERIFY_ERROR, new_histogram, percentile_curve,
};
pub use runner::run;
pub use users::{UserPicker, user_id};

/// Environment variable with the bearer token (instead of `--token`).
pub const TOKEN_ENV: &str = "SHREDSTORE_TOKEN";

/// Why a run could not be carried out. Failed requests are not errors: they
/// are counted in the [`LoadReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached (or the TLS handshake failed).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The plot could not be drawn or written.
    #[error("{0}")]
    Plot(String),
    /// A worker task failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// When the measured run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunLimit {
    /// Stop taking new requests after this long.
    Duration(Duration),
    /// Send exactly this many requests.
    Requests(u64),
}

/// Settings of a run. [`LoadConfig::new`] gives the command's defaults.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server URL: `http://host:port` or `https://host:port` (a bare
    /// `host:port` means http, or https with `tls_ca`).
    pub addr: String,
    /// CA certificate (PEM) to trust for https.
    pub tls_ca: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the host of
    /// `addr`).
    pub tls_domain: Option<String>,
    /// Client certificate chain and key (PEM) for mTLS.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Workers, each with its own connection.
    pub concurrency: usize,
    /// When the measured run ends.
    pub limit: RunLimit,
    /// Run this long first and discard the results.
    pub warmup: Duration,
    /// Bytes per appended payload (at least [`PAYLOAD_HEADER_LEN`]).
    pub payload_size: usize,
    /// Distinct users.
    pub users: u64,
    /// Zipf exponent of the user choice; 0 = uniform.
    pub zipf: f64,
    /// User ids are `{user_prefix}{index}`.
    pub user_prefix: String,
    /// Operation weights.
    pub mix: Mix,
    /// Send appends over AppendStream (one stream per worker).
    pub stream: bool,
    /// Most appends in flight per stream.
    pub stream_window: usize,
    /// Open loop at this many requests per second in total; `None` = closed
    /// loop.
    pub rate: Option<f64>,
    /// Messages asked for per read.
    pub read_limit: u32,
    /// Seed for reproducible request sequences (payload filler included).
    pub seed: Option<u64>,
    /// Write the SVG plot here.
    pub plot: Option<PathBuf>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Instead of a server, open a store in this new or empty directory
    /// (fresh random root key, Buffered durability) and send the same
    /// requests to it in-process, on the blocking pool as the server does:
    /// the embedded baseline of the gRPC figures. `addr`, TLS and token are
    /// ignored; `stream` is refused.
    pub embedded: Option<PathBuf>,
    /// Conversation mode: this many conversations (picked with `zipf`),
    /// `authors_per_conversation` authors each, on the Conversations
    /// service; 0 = off (the per-user mode on Store).
    pub conversations: u64,
    /// Authors per conversation, picked uniformly (conversation mode).
    pub authors_per_conversation: u32,
    /// Conversation `c` is `{conversation_prefix}{c}`, its author `a`
    /// `{conversation_prefix}{c}-author-{a}` (conversation mode).
    pub conversation_prefix: String,
    /// Items asked for per backward read, the newest first (conversation
    /// mode; `read_limit` is the per-user mode's).
    pub conversation_read_limit: u32,
}

impl LoadConfig {
    /// The defaults of `shredstore load` against `addr`: 16 workers, 10 s,
    /// 200-byte payloads, 10,000 users with Zipf exponent 1, mix
    /// `append=90,read=9,erase=1`, unary, closed loop, reads of 100; the
    /// conversation mode off (5 authors per conversation and reads of the
    /// newest 50 when it is turned on).
    pub fn new(addr: impl Into<String>) -> LoadConfig {
        LoadConfig {
            addr: addr.into(),
            tls_ca: None,
            tls_domain: None,
            tls_identity: None,
            token: None,
            concurrency: 16,
            limit: RunLimit::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            payload_size: 200,
            users: 10_000,
            zipf: 1.0,
            user_prefix: "load-user-".to_owned(),
            mix: Mix::default(),
            stream: false,
            stream_window: 32,
            rate: None,
            read_limit: 100,
            seed: None,
            plot: None,
            progress: false,
            embedded: None,
            conversations: 0,
            authors_per_conversation: 5,
            conversation_prefix: "load-conv-".to_owned(),
            conversation_read_limit: 50,
        }
    }

    /// The conversation picker of conversation mode, `None` in the per-user
    /// mode.
    ///
    /// # Errors
    /// [`LoadError::Config`] naming the bad setting.
    pub fn conversation_picker(&self) -> Result<Option<ConversationPicker>, LoadError> {
        if self.conversations == 0 {
            return Ok(None);
        }
        ConversationPicker::new(
            self.conversations,
            self.authors_per_conversation,
            self.zipf,
            &self.conversation_prefix,
        )
        .map(Some)
        .map_err(LoadError::Config)
    }

    /// Checks the settings that do not need the network.
    ///
    /// # Errors
    /// [`LoadError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        if !(1..=100_000).contains(&self.concurrency) {
            return bad(format!(
                "--concurrency must be 1..=100000, not {}",
                self.concurrency
            ));
        }
        match self.limit {
            RunLimit::Duration(d) if d.is_zero() => {
                return bad("--duration must be more than 0".into());
            }
            RunLimit::Requests(0) => return bad("--requests must be at least 1".into()),
            _ => {}
        }
        if self.payload_size < PAYLOAD_HEADER_LEN {
            return bad(format!(
                "--payload-size must be at least {PAYLOAD_HEADER_LEN} bytes (the checksum header), not {}",
                self.payload_size
            ));
        }
        UserPicker::new(self.users, self.zipf).map_err(LoadError::Config)?;
        let longest = user_id(&self.user_prefix, self.users.saturating_sub(1));
        if longest.len() > crate::MAX_USER_ID_LEN {
            return bad(format!(
                "--user-prefix is too long: user ids must be at most {} bytes",
                crate::MAX_USER_ID_LEN
            ));
        }
        if self.stream && self.embedded.is_some() {
            return bad("--stream needs a server; it cannot be combined with --embedded".into());
        }
        if self.stream && !(1..=65_536).contains(&self.stream_window) {
            return bad(format!(
                "--stream-window must be 1..=65536, not {}",
                self.stream_window
            ));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return bad(format!("--rate must be a positive number, not {r}"));
        }
        if self.read_limit == 0 {
            return bad("--read-limit must be at least 1".into());
        }
        if let Some(p) = self.conversation_picker()? {
            let last = p.conversations() - 1;
            let longest = p
                .conversation_id(last)
                .len()
                .max(p.author_id(last, p.authors() - 1).len());
            let max = crate::MAX_CONVERSATION_ID_LEN.min(crate::MAX_USER_ID_LEN);
            if longest > max {
                return bad(format!(
                    "--conversation-prefix is too long: conversation and author ids must be at most {max} bytes"
                ));
            }
            if self.conversation_read_limit == 0 {
                return bad("--conversation-read-limit must be at least 1".into());
            }
        }
        Ok(())
    }
}

/// Flags of `shredstore load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Server URL: http://host:port, or https://host:port with --tls-ca.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// CA certificate (PEM) to trust for an https:// address.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify the certificate against [default: the host of --addr].
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// Client certificate chain (PEM) for mTLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token (needs the append, read and erase roles for the default mix).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Workers, each with its own connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How long to run: seconds (`30`, `2.5`) or with a unit (`500ms`,
    /// `10s`, `2m`, `1h`) [default: 10s].
    #[arg(long, conflicts_with = "requests", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send exactly this many requests instead of running for --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// How long to run first, results discarded (as --duration) [default: 0].
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub warmup: Duration,
    /// Bytes per appended payload (at least 8: the checksum header).
    #[arg(long, default_value_t = 200)]
    pub payload_size: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Zipf exponent of the user choice (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// User ids are <prefix><index>; change it so runs do not share users.
    #[arg(long, default_value = "load-user-")]
    pub user_prefix: String,
    /// Operation weights, e.g. append=90,read=9,erase=1 (left out = 0).
    #[arg(long, default_value = "append=90,read=9,erase=1")]
    pub mix: Mix,
    /// Send appends over AppendStream (one stream per worker); reads and
    /// erases stay unary.
    #[arg(long)]
    pub stream: bool,
    /// Most appends in flight per stream.
    #[arg(long, default_value_t = 32)]
    pub stream_window: usize,
    /// Open loop: this many requests per second in total, latency measured
    /// from each request's scheduled time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages asked for per read (a user's oldest first).
    #[arg(long, default_value_t = 100)]
    pub read_limit: u32,
    /// Seed for a reproducible request sequence.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG with latency-by-percentile and throughput-over-time charts.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Exit with status 1 if any request failed.
    #[arg(long)]
    pub fail_on_error: bool,
    /// No server: open a store in this new or empty directory (fresh root
    /// key, buffered durability) and send the same requests in-process. The
    /// embedded baseline for the gRPC figures; --stream is refused.
    #[arg(long, value_name = "DIR", conflicts_with = "stream")]
    pub embedded: Option<PathBuf>,
    /// Conversation mode: this many conversations, picked with --zipf, each
    /// with --authors-per-conversation authors. Appends go to
    /// Conversations.Append (AppendStream with --stream), reads are
    /// backward reads of the newest --conversation-read-limit items, erases
    /// erase one author (Store.Erase); --users, --user-prefix and
    /// --read-limit are ignored. 0 = off: per-user requests on Store.
    #[arg(long, default_value_t = 0)]
    pub conversations: u64,
    /// Authors per conversation (conversation mode), picked uniformly.
    #[arg(long, default_value_t = 5)]
    pub authors_per_conversation: u32,
    /// Conversation ids are <prefix><index>, author ids
    /// <prefix><index>-author-<n> (conversation mode).
    #[arg(long, default_value = "load-conv-")]
    pub conversation_prefix: String,
    /// Items per backward read of a conversation, the newest first
    /// (conversation mode).
    #[arg(long, default_value_t = 50)]
    pub conversation_read_limit: u32,
}

/// Parses a duration: a non-negative number of seconds, or a number with
/// one of the units `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((t, 1.0));
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| {
            format!("{text:?} is not a duration (seconds, or a number with ms, s, m or h)")
        })
}

impl LoadArgs {
    /// The run settings of these flags (progress lines when stderr is a
    /// terminal).
    ///
    /// # Errors
    /// [`LoadError::Config`] for a bad value.
    pub fn to_config(&self) -> Result<LoadConfig, LoadError> {
        use std::io::IsTerminal;
        let limit = match (self.requests, self.duration) {
            (Some(n), _) => RunLimit::Requests(n),
            (None, Some(d)) => RunLimit::Duration(d),
            (None, None) => RunLimit::Duration(Duration::from_secs(10)),
        };
        let config = LoadConfig {
            addr: self.addr.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_domain: self.tls_domain.clone(),
            tls_identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            token: self.token.clone(),
            concurrency: self.concurrency,
            limit,
            warmup: self.warmup,
            payload_size: self.payload_size,
            users: self.users,
            zipf: self.zipf,
            user_prefix: self.user_prefix.clone(),
            mix: self.mix,
            stream: self.stream,
            stream_window: self.stream_window,
            rate: self.rate,
            read_limit: self.read_limit,
            seed: self.seed,
            plot: self.plot.clone(),
            progress: std::io::stderr().is_terminal(),
            embedded: self.embedded.clone(),
            conversations: self.conversations,
            authors_per_conversation: self.authors_per_conversation,
            conversation_prefix: self.conversation_prefix.clone(),
            conversation_read_limit: self.conversation_read_limit,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_settings_are_named() {
        LoadConfig::new("http://x:1").validate().unwrap();
        let cases: Vec<(LoadConfig, &str)> = vec![
            (
                LoadConfig {
                    payload_size: 7,
                    ..LoadConfig::new("x")
                },
                "--payload-size",
            ),
            (
                LoadConfig {
                    concurrency: 0,
                    ..LoadConfig::new("x")
                },
                "--concurrency",
            ),
            (
                LoadConfig {
                    limit: RunLimit::Requests(0),
                    ..LoadConfig::new("x")
                },
                "--requests",
            ),
            (
                LoadConfig {
                    users: 0,
                    ..LoadConfig::new("x")
                },
                "--users",
            ),
            (
                LoadConfig {
                    zipf: -1.0,
                    ..LoadConfig::new("x")
                },
                "--zipf",
            ),
            (
                LoadConfig {
                    rate: Some(0.0),
                    ..LoadConfig::new("x")
                },
                "--rate",
            ),
            (
                LoadConfig {
                    user_prefix: "p".repeat(300),
                    ..LoadConfig::new("x")
                },
                "--user-prefix",
            ),
            (
                LoadConfig {
                    stream: true,
                    stream_window: 0,
                    ..LoadConfig::new("x")
                },
                "--stream-window",
            ),
            (
                LoadConfig {
                    conversations: 10,
                    authors_per_conversation: 0,
                    ..LoadConfig::new("x")
                },
                "--authors-per-conversation",
            ),
            (
                LoadConfig {
                    conversations: 10,
                    conversation_prefix: "p".repeat(250),
                    ..LoadConfig::new("x")
                },
                "--conversation-prefix",
            ),
            (
                LoadConfig {
                    conversations: 10,
                    conversation_read_limit: 0,
                    ..LoadConfig::new("x")
                },
                "--conversation-read-limit",
            ),
            (
                LoadConfig {
                    conversations: 10,
                    zipf: f64::NAN,
                    ..LoadConfig::new("x")
                },
                "--zipf",
            ),
        ];
        for (c, flag) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--requests",
            "50",
            "--mix",
            "append=1,read=1",
            "--stream",
            "--rate",
            "100",
        ])
        .unwrap();
        let c = cli.load.to_config().unwrap();
        assert_eq!(c.limit, RunLimit::Requests(50));
        assert_eq!(c.mix.weight(Op::Erase), 0);
        assert!(c.stream && c.rate == Some(100.0));
        let c = Cli::try_parse_from(["x"])
            .unwrap()
            .load
            .to_config()
            .unwrap();
        assert_eq!(c.limit, RunLimit::Duration(Duration::from_secs(10)));
        assert_eq!((c.payload_size, c.users, c.read_limit), (200, 10_000, 100));
        assert_eq!(c.conversations, 0, "conversation mode is off by default");
        assert!(c.conversation_picker().unwrap().is_none());
        let c = Cli::try_parse_from([
            "x",
            "--conversations",
            "1000",
            "--authors-per-conversation",
            "3",
            "--mix",
            "append=9,read=1",
        ])
        .unwrap()
        .load
        .to_config()
        .unwrap();
        let p = c.conversation_picker().unwrap().unwrap();
        assert_eq!((p.conversations(), p.authors()), (1000, 3));
        assert_eq!(p.author_id(999, 2), "load-conv-999-author-2");
        assert_eq!(c.conversation_read_limit, 50);
        // The longest ids just fit: 256 bytes.
        let fits = LoadConfig {
            conversations: 10,
            authors_per_conversation: 10,
            conversation_prefix: "p".repeat(256 - "9-author-9".len()),
            ..LoadConfig::new("x")
        };
        fits.validate().unwrap();
        // Off: the conversation settings are not looked at.
        LoadConfig {
            authors_per_conversation: 0,
            conversation_read_limit: 0,
            ..LoadConfig::new("x")
        }
        .validate()
        .unwrap();
        assert!(Cli::try_parse_from(["x", "--mix", "append=0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--duration", "1", "--requests", "2"]).is_err());
        let e = Cli::try_parse_from(["x", "--duration=-1"]).err().unwrap();
        assert!(e.to_string().contains("--duration"), "{e}");
        for (text, want) in [
            ("10", Duration::from_secs(10)),
            ("2.5", Duration::from_millis(2500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("500ms", Duration::from_millis(500)),
            ("1h", Duration::from_secs(3600)),
        ] {
            let c = Cli::try_parse_from(["x", "--duration", text])
                .unwrap()
                .load
                .to_config()
                .unwrap();
            assert_eq!(c.limit, RunLimit::Duration(want), "{text}");
        }
        for bad in ["", "s", "10x", "-3s", "1e400", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
