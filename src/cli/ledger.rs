//! `shredstore erasure-request`: record, cancel and list erasure requests
//! of a running server's ledger (`Admin.RequestErasure`, `CancelErasure`,
//! `ErasureRequests`).

use std::process::ExitCode;

use shredstore::server::proto::{
    CancelErasureRequest, ErasureRequest, ErasureRequestState, ErasureRequestsRequest,
    RequestErasureRequest,
};

use super::UserIdArg;
use super::backup::{ServerArgs, date, finish, runtime};

/// `shredstore erasure-request`.
#[derive(clap::Args)]
pub(crate) struct ErasureRequestArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Record an erasure request: the user is restricted at once and erased
    /// by the server when the grace ends. Prints the request.
    Create {
        #[command(flatten)]
        user: UserIdArg,
        /// How long it can still be cancelled, in ms (0: it runs at once;
        /// at most the server's due period, 30 days by default).
        #[arg(long, default_value_t = 0)]
        grace_ms: u64,
        /// Also delete the conversations the user is a declared subject of.
        #[arg(long)]
        delete_subject_conversations: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a request within its grace (its restriction is lifted).
    Cancel {
        /// The request id (32 hex digits).
        request_id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the requests, oldest first. Exit status 2 if any is overdue.
    List {
        /// Only requests in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StateArg {
    Pending,
    WaitingForHold,
    Done,
    Cancelled,
}

fn state_name(s: i32) -> &'static str {
    match ErasureRequestState::try_from(s) {
        Ok(ErasureRequestState::Pending) => "pending",
        Ok(ErasureRequestState::WaitingForHold) => "waiting_for_hold",
        Ok(ErasureRequestState::Done) => "done",
        Ok(ErasureRequestState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// One line: id, state, handle, received, due, grace end, and the
/// receipt's time and count once done.
fn line(r: &ErasureRequest) -> String {
    let mut s = format!(
        "{} {} handle={} received={} due={} grace_until={}",
        r.request_id,
        state_name(r.state),
        r.handle,
        date(r.received_ms),
        date(r.due_ms),
        date(r.grace_until_ms),
    );
    if r.delete_subject_conversations {
        s.push_str(" delete_subject_conversations");
    }
    if let Some(rc) = &r.receipt {
        s.push_str(&format!(
            " erased_at={} messages_erased={} epoch={}",
            date(rc.erased_at_ms),
            rc.messages_erased,
            rc.epoch
        ));
    }
    if r.overdue {
        s.push_str(" OVERDUE");
    }
    s
}

pub(crate) fn erasure_request_command(args: &ErasureRequestArgs) -> ExitCode {
    let server = match &args.action {
        Action::Create { server, .. }
        | Action::Cancel { server, .. }
        | Action::List { server, .. } => server,
    };
    let config = server.config(&server.addr);
    let mut overdue = false;
    let r = runtime().and_then(|rt| {
        rt.block_on(async {
            let mut client = shredstore::load::connect_admin(&config)
                .await
                .map_err(|e| e.to_string())?;
            let status = |e: tonic::Status| format!("{:?}: {}", e.code(), e.message());
            match &args.action {
                Action::Create {
                    user,
                    grace_ms,
                    delete_subject_conversations,
                    ..
                } => {
                    let resp = client
                        .request_erasure(RequestErasureRequest {
                            user_id: user.bytes()?,
                            grace_ms: *grace_ms,
                            delete_subject_conversations: *delete_subject_conversations,
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    let req = resp.request.ok_or("the server sent no request")?;
                    if resp.existing {
                        eprintln!("the user already has an open request; it is unchanged");
                    }
                    println!("{}", line(&req));
                }
                Action::Cancel { request_id, .. } => {
                    let resp = client
                        .cancel_erasure(CancelErasureRequest {
                            request_id: request_id.clone(),
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    let req = resp.request.ok_or("the server sent no request")?;
                    println!("{}", line(&req));
                }
                Action::List { state, .. } => {
                    let state = match state {
                        None => ErasureRequestState::Unspecified,
                        Some(StateArg::Pending) => ErasureRequestState::Pending,
                        Some(StateArg::WaitingForHold) => ErasureRequestState::WaitingForHold,
                        Some(StateArg::Done) => ErasureRequestState::Done,
                        Some(StateArg::Cancelled) => ErasureRequestState::Cancelled,
                    };
                    let mut stream = client
                        .erasure_requests(ErasureRequestsRequest {
                            state: state.into(),
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    while let Some(item) = stream.message().await.map_err(status)? {
                        if let Some(req) = item.request {
                            overdue |= req.overdue;
                            println!("{}", line(&req));
                        }
                    }
                }
            }
            Ok(())
        })
    });
    match r {
        Ok(()) if overdue => {
            eprintln!("some erasure requests are overdue");
            ExitCode::from(2)
        }
        r => finish(r),
    }
}
