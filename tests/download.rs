//! Attachment downloads against a local server standing in for Discord's CDN
//! (reached through the `discord.proxy` rewrite, as the bot's tests do).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;
use yingshi::bot::download::{AttachmentInfo, DownloadError, Downloader};

/// Serves a few paths; counts requests.
async fn cdn() -> (Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let response: Vec<u8> = if path
                    .starts_with("/cdn.discordapp.com/attachments/1/2/cat.png?ex=1")
                {
                    let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 5\r\nconnection: close\r\n\r\n".to_vec();
                    r.extend(b"\x89PNG!");
                    r
                } else if path.ends_with("/endless.png") {
                    // No length given; more bytes than the cap.
                    let mut r =
                        b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n\r\n"
                            .to_vec();
                    r.extend(vec![7u8; 4000]);
                    r
                } else if path.ends_with("/slow.png") {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/")).unwrap(), hits)
}

fn info(
    url: &str,
    size: u64,
    content_type: Option<&'static str>,
) -> (String, u64, Option<&'static str>) {
    (url.to_owned(), size, content_type)
}

async fn fetch(
    d: &Downloader,
    (url, size, content_type): &(String, u64, Option<&'static str>),
) -> Result<Vec<u8>, DownloadError> {
    d.fetch(&AttachmentInfo {
        url,
        size: *size,
        content_type: *content_type,
    })
    .await
}

#[tokio::test]
async fn fetches_through_the_proxy_and_refuses_what_it_should() {
    let (proxy, hits) = cdn().await;
    let d = Downloader::new(
        1000,
        Duration::from_secs(2),
        Duration::from_secs(1),
        Some(proxy),
    )
    .unwrap();
    let cat = info(
        "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1",
        5,
        Some("image/png"),
    );
    assert_eq!(fetch(&d, &cat).await.unwrap(), b"\x89PNG!");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Refused before any request: another host, too large, not an image, plain http.
    let refused = [
        (
            info("https://example.com/cat.png", 5, Some("image/png")),
            DownloadError::NotDiscord,
        ),
        (
            info(
                "http://cdn.discordapp.com/attachments/1/2/cat.png",
                5,
                Some("image/png"),
            ),
            DownloadError::NotDiscord,
        ),
        (
            info(
                "https://cdn.discordapp.com.evil.net/cat.png",
                5,
                Some("image/png"),
            ),
            DownloadError::NotDiscord,
        ),
        (
            info(
                "https://media.discordapp.net/a/b.png",
                5000,
                Some("image/png"),
            ),
            DownloadError::TooLarge {
                size: 5000,
                max: 1000,
            },
        ),
        (
            info(
                "https://cdn.discordapp.com/a/notes.txt",
                5,
                Some("text/plain"),
            ),
            DownloadError::NotAnImage("text/plain".into()),
        ),
    ];
    for (attachment, expected) in &refused {
        assert_eq!(
            &fetch(&d, attachment).await.unwrap_err(),
            expected,
            "{}",
            attachment.0
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "nothing refused was requested"
    );

    // Fetched, then stopped: a body over the cap, an expired link, a stalled server.
    let endless = info(
        "https://cdn.discordapp.com/a/endless.png",
        10,
        Some("image/png"),
    );
    assert!(matches!(
        fetch(&d, &endless).await,
        Err(DownloadError::TooLarge { max: 1000, .. })
    ));
    let gone = info(
        "https://cdn.discordapp.com/a/gone.png",
        10,
        Some("image/png"),
    );
    assert_eq!(
        fetch(&d, &gone).await.unwrap_err(),
        DownloadError::Status(404)
    );
    let slow = info(
        "https://cdn.discordapp.com/a/slow.png",
        10,
        Some("image/jpeg"),
    );
    assert_eq!(fetch(&d, &slow).await.unwrap_err(), DownloadError::Timeout);
}
