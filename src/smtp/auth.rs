//! AUTH (RFC 4954) with PLAIN and LOGIN, against the listener's `users` table.
//!
//! AUTH is offered only where the listener says so, and only under TLS unless it
//! allows plaintext. Failed attempts count against the client's `auth-failures` rate
//! limit (on by default); once it is used up, AUTH is refused for the rest of the
//! window even with the right password. With `auth-failures-per-user`, failures are
//! also counted per user name, from whatever client. Logs name the user and the mechanism, never a
//! password.

use tracing::{info, warn};

use super::reply;
use super::session::{Flow, Session};
use super::shared::{Limited, Want};
use crate::auth::AuthOutcome;
use crate::auth::sasl::{self, Password, SaslError};
use crate::config::AuthMode;
use crate::policy::RateKind as Kind;

/// Where an AUTH exchange stands while it waits for the client's next line.
#[derive(Debug)]
pub(super) enum SaslStep {
    /// `AUTH PLAIN` without an initial response: we sent `334 `.
    Plain,
    /// `AUTH LOGIN`: we asked for the user name.
    LoginUser,
    /// `AUTH LOGIN`: we asked for the password of this user.
    LoginPassword(String),
}

impl SaslStep {
    fn mechanism(&self) -> &'static str {
        match self {
            SaslStep::Plain => "PLAIN",
            _ => "LOGIN",
        }
    }
}

impl Session {
    pub(super) async fn handle_auth(&mut self, mechanism: u64, initial: &str) -> Flow {
        if self.listen.auth == AuthMode::Off || self.listen.users.is_none() {
            return self.fail(reply::NO_AUTH);
        }
        if self.tls.is_none() && !self.listen.auth_plaintext {
            return self.fail(reply::AUTH_NEEDS_TLS);
        }
        if self.helo.is_none() {
            return self.fail(reply::NEED_HELO);
        }
        if self.auth_user.is_some() {
            return self.fail(reply::ALREADY_AUTHENTICATED);
        }
        if self.tx.sender.is_some() {
            return self.fail(reply::TRANSACTION_IN_PROGRESS);
        }
        let ip = self.peer.ip();
        let wants = [Want::Check(Kind::AuthFailures), Want::Take(Kind::Auth)];
        let limited = self.core.limit(ip, &wants, &mut self.seen).await;
        let replies = (reply::TOO_MANY_AUTH, reply::AUTH_LIMITS_UNAVAILABLE);
        if let Some(flow) = self.refuse_limited(limited, "AUTH", "auth", replies) {
            return flow;
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.sasl = Some(SaslStep::Plain);
                self.push_ok(reply::AUTH_EMPTY_CHALLENGE)
            }
            smtp_proto::AUTH_PLAIN => {
                let response = self.plain_response(initial);
                self.finish_auth("PLAIN", response).await
            }
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.sasl = Some(SaslStep::LoginUser);
                self.push_ok(&challenge(sasl::LOGIN_USERNAME_CHALLENGE))
            }
            smtp_proto::AUTH_LOGIN => self.login_user(initial).await,
            _ => self.fail(reply::UNKNOWN_MECHANISM),
        }
    }

    /// The client's answer to a `334` challenge (the line without its CRLF).
    pub(super) async fn sasl_response(&mut self, line: &str) -> Flow {
        let Some(step) = self.sasl.take() else {
            return Flow::Continue;
        };
        match step {
            SaslStep::Plain => {
                let response = self.plain_response(line);
                self.finish_auth("PLAIN", response).await
            }
            SaslStep::LoginUser => self.login_user(line).await,
            SaslStep::LoginPassword(user) => {
                let response = sasl::decode_login_password(line).map(|p| (user, p));
                self.finish_auth("LOGIN", response).await
            }
        }
    }

    /// An AUTH command or exchange line longer than the line limit: the exchange is
    /// over, and it counts as a failed attempt.
    pub(super) async fn sasl_line_too_long(&mut self) -> Flow {
        let mechanism = self.sasl.take().map_or("", |step| step.mechanism());
        self.auth_failed(mechanism, None, "line too long").await;
        self.fail(reply::AUTH_LINE_TOO_LONG)
    }

    fn plain_response(&self, line: &str) -> Result<(String, Password), SaslError> {
        sasl::decode_plain(line).map(|c| (c.user, c.password))
    }

    async fn login_user(&mut self, line: &str) -> Flow {
        match sasl::decode_login_username(line) {
            Ok(user) => {
                self.sasl = Some(SaslStep::LoginPassword(user));
                self.push_ok(&challenge(sasl::LOGIN_PASSWORD_CHALLENGE))
            }
            Err(e) => self.finish_auth("LOGIN", Err(e)).await,
        }
    }

    async fn finish_auth(
        &mut self,
        mechanism: &'static str,
        response: Result<(String, Password), SaslError>,
    ) -> Flow {
        let (user, password) = match response {
            Ok(r) => r,
            Err(SaslError::Cancelled) => {
                self.auth_failed(mechanism, None, "cancelled by the client")
                    .await;
                return self.fail(reply::AUTH_CANCELLED);
            }
            Err(SaslError::AuthzidMismatch) => {
                self.auth_failed(mechanism, None, "authorization identity differs")
                    .await;
                return self.fail(reply::AUTH_FAILED);
            }
            Err(e @ SaslError::Malformed(_)) => {
                self.auth_failed(mechanism, None, &e.to_string()).await;
                return self.fail(reply::AUTH_UNDECODABLE);
            }
        };
        let Some(users) = self.listen.users.clone() else {
            return self.fail(reply::NO_AUTH);
        };
        let ip = self.peer.ip();
        let limited = self
            .core
            .limit(ip, &[Want::CheckUser(&user)], &mut self.seen)
            .await;
        if limited == Limited::Refused {
            self.auth_failed(mechanism, Some(&user), "too many failures for this user")
                .await;
        }
        let replies = (reply::TOO_MANY_AUTH_USER, reply::AUTH_LIMITS_UNAVAILABLE);
        if let Some(flow) = self.refuse_limited(limited, "AUTH", "auth-failures-per-user", replies)
        {
            return flow;
        }
        match users.verify(&user, password.as_bytes()).await {
            AuthOutcome::Ok(name) => {
                info!(user = %reply::sanitize(&name, 255), mechanism, "authenticated");
                self.auth_user = Some(name);
                self.sasl_method = Some(mechanism);
                self.commands.succeeded("auth");
                self.push_ok(reply::AUTH_OK)
            }
            AuthOutcome::Failed => {
                self.auth_failed(mechanism, Some(&user), "wrong password or unknown user")
                    .await;
                self.fail(reply::AUTH_FAILED)
            }
            AuthOutcome::Unavailable(why) => {
                warn!(user = %reply::sanitize(&user, 255), mechanism, reason = %why, "authentication unavailable");
                self.fail(reply::AUTH_TEMPORARY)
            }
        }
    }

    /// Logs a failed attempt (never the password) and counts it against the client.
    async fn auth_failed(&mut self, mechanism: &str, user: Option<&str>, why: &str) {
        let user = user.map(|u| reply::sanitize(u, 255));
        // Postfix's line (fail2ban's `postfix[mode=auth]` reads it), our extras after
        crate::mail!(
            crate::maillog::Agent::Smtpd,
            WARN,
            user = user.as_deref().unwrap_or(""),
            mechanism,
            reason = why,
            "warning: {}: SASL {} authentication failed: authentication failure",
            crate::maillog::Client(self.peer.ip()),
            mechanism.to_ascii_uppercase()
        );
        crate::metrics::get().auth_failed(&self.listen.name);
        let mut wants = vec![Want::Take(Kind::AuthFailures)];
        if let Some(user) = &user {
            wants.push(Want::TakeUser(user));
        }
        // both counted: a client at its limit is not refused here, it failed already
        for want in wants {
            let _ = self
                .core
                .limit(self.peer.ip(), &[want], &mut self.seen)
                .await;
        }
    }
}

fn challenge(text: &str) -> String {
    format!("334 {text}\r\n")
}
