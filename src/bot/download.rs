//! Attachment downloads, never `Attachment::download` (no timeout, no cap):
//! only Discord's CDN hosts, the declared size and type checked first, one
//! shared client with connect and total timeouts, the status checked, and the
//! body streamed with a byte cap. With a proxy set (`discord.proxy`), the
//! request goes to `{proxy}/{host}{path}` — after the allowlist has judged
//! the original URL.

use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

/// Hosts Discord serves attachments from.
pub(crate) const ALLOWED_HOSTS: [&str; 2] = ["cdn.discordapp.com", "media.discordapp.net"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DownloadError {
    #[error("that link is not a Discord attachment, so I won't fetch it")]
    NotDiscord,
    #[error("that file is {size} bytes; I take photos up to {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("that attachment is not a photo ({0})")]
    NotAnImage(String),
    #[error("Discord did not hand over the photo (status {0}); the link may have expired, please post it again")]
    Status(u16),
    #[error("the photo took too long to download; please try again")]
    Timeout,
    #[error("the photo could not be downloaded: {0}")]
    Network(String),
}

#[derive(Clone)]
pub struct Downloader {
    client: reqwest::Client,
    max_bytes: u64,
    proxy: Option<Url>,
}

/// What Discord says of an attachment before it is fetched.
#[derive(Debug, Clone)]
pub struct AttachmentInfo<'a> {
    pub url: &'a str,
    pub size: u64,
    pub content_type: Option<&'a str>,
}

impl Downloader {
    pub fn new(
        max_bytes: u64,
        connect_timeout: Duration,
        total_timeout: Duration,
        proxy: Option<Url>,
    ) -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DownloadError::Network(e.to_string()))?;
        Ok(Self {
            client,
            max_bytes,
            proxy,
        })
    }

    /// Judges an attachment without fetching it.
    pub(crate) fn check(&self, info: &AttachmentInfo) -> Result<Url, DownloadError> {
        let url = Url::parse(info.url).map_err(|_| DownloadError::NotDiscord)?;
        let allowed =
            url.scheme() == "https" && url.host_str().is_some_and(|h| ALLOWED_HOSTS.contains(&h));
        if !allowed {
            return Err(DownloadError::NotDiscord);
        }
        if info.size > self.max_bytes {
            return Err(DownloadError::TooLarge {
                size: info.size,
                max: self.max_bytes,
            });
        }
        match info.content_type {
            Some(t) if t.starts_with("image/") => Ok(url),
            other => Err(DownloadError::NotAnImage(
                other.unwrap_or("no type given").to_owned(),
            )),
        }
    }

    /// Checks, then fetches, an attachment within the byte cap.
    pub async fn fetch(&self, info: &AttachmentInfo<'_>) -> Result<Vec<u8>, DownloadError> {
        let url = self.check(info)?;
        let target = match &self.proxy {
            Some(base) => {
                let mut rewritten = base.clone();
                let path = format!(
                    "{}/{}{}",
                    base.path().trim_end_matches('/'),
                    url.host_str().unwrap_or_default(),
                    url.path()
                );
                rewritten.set_path(&path);
                rewritten.set_query(url.query());
                rewritten
            }
            None => url,
        };
        let response = self.client.get(target).send().await.map_err(network)?;
        if !response.status().is_success() {
            return Err(DownloadError::Status(response.status().as_u16()));
        }
        if let Some(len) = response.content_length() {
            if len > self.max_bytes {
                return Err(DownloadError::TooLarge {
                    size: len,
                    max: self.max_bytes,
                });
            }
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(network)?;
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(DownloadError::TooLarge {
                    size: (body.len() + chunk.len()) as u64,
                    max: self.max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn network(e: reqwest::Error) -> DownloadError {
    if e.is_timeout() {
        DownloadError::Timeout
    } else {
        DownloadError::Network(e.to_string())
    }
}
