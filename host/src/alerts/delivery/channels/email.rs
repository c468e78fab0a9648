//! Email by SMTP (lettre): subject `[SEVERITY] title`, one recipient a
//! message, a `Message-ID` derived from the delivery key so that a repeat
//! after a crash is recognisable.

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Content, SendError};
use crate::alerts::delivery::config::{EmailChannel, SmtpSecurity};

/// The SMTP client of the email channel.
pub(super) struct Smtp {
    transport: Result<AsyncSmtpTransport<Tokio1Executor>, String>,
    from: String,
}

impl Smtp {
    pub fn new(config: &EmailChannel) -> Self {
        Self {
            transport: transport(config),
            from: config.from.clone(),
        }
    }

    pub async fn send(
        &self,
        to: &str,
        content: &Content<'_>,
        message_key: &str,
    ) -> Result<Option<u16>, SendError> {
        let transport = self.transport.as_ref().map_err(SendError::permanent)?;
        let message = message(&self.from, to, content, message_key)?;
        match transport.send(message).await {
            Ok(response) => Ok(Some(u16::from(response.code()))),
            Err(err) => {
                let code = err.status().map(u16::from);
                Err(SendError {
                    error: format!("smtp: {err}"),
                    http_status: code,
                    // A 5xx reply (a refused recipient) stays refused.
                    retryable: !err.is_permanent(),
                    retry_after: None,
                })
            }
        }
    }
}

fn transport(config: &EmailChannel) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = || {
        TlsParameters::new(config.host.clone())
            .map_err(|err| format!("smtp TLS for {}: {err}", config.host))
    };
    let security = match config.security {
        SmtpSecurity::Starttls => Tls::Required(tls()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls()?),
        SmtpSecurity::Plain => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
        .port(config.port)
        .tls(security)
        .timeout(Some(config.timeout));
    if let Some((user, password)) = &config.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    Ok(builder.build())
}

/// The message: subject `[SEVERITY] title`, To the recipient, the body and
/// its links as plain text.
pub(super) fn message(
    from: &str,
    to: &str,
    content: &Content<'_>,
    message_key: &str,
) -> Result<Message, SendError> {
    let subject = format!(
        "[{}] {}",
        content.severity().to_uppercase(),
        content.title()
    );
    let subject = super::truncate_chars(&subject, 250);
    let id = crate::digest::sha256_hex(message_key.as_bytes());
    Message::builder()
        .from(
            from.parse()
                .map_err(|err| SendError::permanent(format!("from {from:?}: {err}")))?,
        )
        .to(to
            .parse()
            .map_err(|err| SendError::permanent(format!("to {to:?}: {err}")))?)
        .subject(subject)
        .message_id(Some(format!("<{}@autoagent>", &id[..32])))
        .header(ContentType::TEXT_PLAIN)
        .body(content.text())
        .map_err(|err| SendError::permanent(format!("cannot build the message: {err}")))
}
