//! The real serenity/poise client against a fake Discord on 127.0.0.1: REST
//! through `discord.proxy` (rate limiter off), a websocket gateway (HELLO →
//! IDENTIFY → READY → events, each guild's on its shard's connection), and the
//! CDN behind the same proxy.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio_tungstenite::tungstenite::Message as Ws;

const BOT: &str = "100";
const CHANNEL: &str = "200";
const GUILD: &str = "300";

/// The tests run one at a time: each starts bots with models of their own,
/// and the load run measures this process's resident memory.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A request the bot made.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    /// The words the bot sent: a message's content, or an interaction
    /// response's; empty when there are none.
    fn text(&self) -> &str {
        self.body["content"]
            .as_str()
            .or(self.body["data"]["content"].as_str())
            .unwrap_or("")
    }
}

fn user(id: &str, name: &str, bot: bool) -> Value {
    json!({"id": id, "username": name, "discriminator": "0000", "global_name": null, "avatar": null, "bot": bot})
}

fn member(permissions: &str) -> Value {
    json!({"user": user("42", "poet", false), "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00",
           "deaf": false, "mute": false, "flags": 0, "permissions": permissions})
}

fn message(id: &str, content: &str, mention_bot: bool, attachments: Value) -> Value {
    message_from(id, CHANNEL, "42", content, mention_bot, attachments)
}

fn message_from(
    id: &str,
    channel: &str,
    author: &str,
    content: &str,
    mention_bot: bool,
    attachments: Value,
) -> Value {
    json!({"id": id, "channel_id": channel, "guild_id": GUILD, "author": user(author, "poet", false),
           "member": {"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0},
           "content": content, "timestamp": "2024-01-01T00:00:00.000000+00:00", "edited_timestamp": null,
           "tts": false, "mention_everyone": false,
           "mentions": if mention_bot { json!([user(BOT, "yingshi", true)]) } else { json!([]) },
           "mention_roles": [], "attachments": attachments, "embeds": [], "pinned": false, "type": 0})
}

/// A post from `author` that mentions the bot, with a photo on Discord's CDN.
fn photo_post(id: &str, channel: &str, author: &str) -> Value {
    let photo = attachment("cat.png", "cdn.discordapp.com", 240512, "image/png");
    message_from(id, channel, author, "<@100>", true, json!([photo]))
}

fn attachment(name: &str, host: &str, size: u64, content_type: &str) -> Value {
    json!({"id": "600", "filename": name, "size": size, "content_type": content_type,
           "url": format!("https://{host}/attachments/{CHANNEL}/600/{name}?ex=1"),
           "proxy_url": format!("https://media.discordapp.net/attachments/{CHANNEL}/600/{name}")})
}

fn slash(id: &str, name: &str, options: Value, permissions: &str) -> Value {
    slash_from(id, CHANNEL, "42", name, options, permissions)
}

fn slash_from(
    id: &str,
    channel: &str,
    author: &str,
    name: &str,
    options: Value,
    permissions: &str,
) -> Value {
    let mut member = member(permissions);
    member["user"]["id"] = json!(author);
    json!({"id": id, "application_id": BOT, "type": 2, "token": format!("tok{id}"), "version": 1,
           "data": {"id": "800", "name": name, "type": 1, "options": options},
           "guild_id": GUILD, "channel_id": channel, "member": member,
           "app_permissions": "8", "locale": "zh-CN", "guild_locale": "zh-CN", "entitlements": [],
           "authorizing_integration_owners": {}, "context": 0, "attachment_size_limit": 26214400})
}

/// A press on a component of the bot's message `posted` (its embeds as sent).
fn press(id: &str, author: &str, data: Value, posted: &Value) -> Value {
    let mut message = message("900", "", false, json!([]));
    message["author"] = user(BOT, "yingshi", true);
    message["embeds"] = posted["embeds"].clone();
    let mut member = member("0");
    member["user"]["id"] = json!(author);
    json!({"id": id, "application_id": BOT, "type": 3, "token": format!("tok{id}"), "version": 1,
           "data": data, "message": message,
           "guild_id": GUILD, "channel_id": CHANNEL, "member": member,
           "app_permissions": "8", "locale": "zh-CN", "guild_locale": "zh-CN", "entitlements": [],
           "authorizing_integration_owners": {}, "context": 0, "attachment_size_limit": 26214400})
}

/// A submission of the modal opened from a component of the bot's message
/// `posted`: its text fields by id.
fn modal_submit(id: &str, custom_id: &str, fields: &[(&str, &str)], posted: &Value) -> Value {
    let mut v = press(id, "42", json!({}), posted);
    v["type"] = json!(5);
    let rows: Vec<Value> = fields
        .iter()
        .map(|(field, value)| {
            json!({"type": 1, "components": [{"type": 4, "custom_id": field, "value": value}]})
        })
        .collect();
    v["data"] = json!({"custom_id": custom_id, "components": rows});
    v
}

/// `/poem` being typed: the keywords option in focus.
fn autocomplete(id: &str, typed: &str) -> Value {
    let mut v = slash(
        id,
        "poem",
        json!([{"name": "keywords", "type": 3, "value": typed, "focused": true}]),
        "0",
    );
    v["type"] = json!(4);
    v
}

/// The bold lines of a poem embed (a 集句 line's credit after it left aside).
fn poem_lines(embed: &Value) -> Vec<String> {
    embed["description"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| Some(l.strip_prefix("**")?.split_once("**")?.0))
        .map(str::to_owned)
        .collect()
}

/// The credits of a 集句 embed's lines: `poet《title》` after each.
fn credits(embed: &Value) -> Vec<String> {
    embed["description"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| Some(l.strip_prefix("**")?.split_once("**")?.1))
        .map(|credit| credit.trim_start_matches('　').trim_matches('*').to_owned())
        .collect()
}

/// The keywords an embed's 意象 line names.
fn imagery(embed: &Value) -> Vec<String> {
    let first = embed["description"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap();
    first
        .trim_start_matches("意象：")
        .split('　')
        .map(|k| k.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Discord's rate limits on replies (`POST /channels/{id}/messages`) as the
/// fake applies them, a storm of 429s thrown in: each channel's bucket
/// allows `LIMIT` replies a `WINDOW`; every third reply is refused with a
/// 429 for its route, and every fifth of those with a global one. What the
/// bot sends into a bucket its headers said was empty, or while a global
/// 429 holds (later than `SLACK` after the fake said so, so that a reply
/// already on its way does not count), is counted as exceeding.
#[derive(Default)]
struct Storm {
    state: std::sync::Mutex<StormState>,
}

#[derive(Default)]
struct StormState {
    replies: usize,
    /// Per channel: when its window began, the replies in it, and until
    /// when (and since when) the fake has said it is empty.
    buckets: std::collections::HashMap<String, Bucket>,
    /// Until when a global 429 holds, and when it was sent.
    global: Option<(std::time::Instant, std::time::Instant)>,
    route_429s: usize,
    global_429s: usize,
    /// Replies sent into a bucket the headers said was empty, and while a
    /// global 429 held.
    exceeded_route: usize,
    exceeded_global: usize,
    /// (channel, message replied to), in the order first tried and delivered.
    first_tried: Vec<(String, String)>,
    delivered: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
struct Bucket {
    began: std::time::Instant,
    used: usize,
    empty: Option<(std::time::Instant, std::time::Instant)>,
}

struct StormReply {
    headers: String,
    /// Seconds, and whether global, for a 429.
    retry_after: Option<(f64, bool)>,
}

impl Storm {
    const LIMIT: usize = 5;
    const WINDOW: Duration = Duration::from_millis(250);
    /// How long a 429 for a route holds, and a global one.
    const RETRY: Duration = Duration::from_millis(60);
    const GLOBAL_RETRY: Duration = Duration::from_millis(200);
    const SLACK: Duration = Duration::from_millis(40);

    fn answer(&self, path: &str, body: &Value) -> StormReply {
        let now = std::time::Instant::now();
        let channel = path
            .split("/channels/")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let reply = (
            channel.clone(),
            body["message_reference"]["message_id"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        let mut s = self.state.lock().unwrap();
        s.replies += 1;
        if !s.first_tried.contains(&reply) {
            s.first_tried.push(reply.clone());
        }
        let held = |(until, said): (std::time::Instant, std::time::Instant)| {
            now < until && now > said + Self::SLACK
        };
        let mut bucket = *s.buckets.entry(channel.clone()).or_insert(Bucket {
            began: now,
            used: 0,
            empty: None,
        });
        if now >= bucket.began + Self::WINDOW {
            bucket = Bucket {
                began: now,
                used: 0,
                empty: None,
            };
        }
        let ends = bucket.began + Self::WINDOW;
        let headers = |remaining: usize, until: std::time::Instant, global: bool| {
            // Whole milliseconds, rounded up: a client that waits what it
            // is told never comes back early.
            let after = until
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000) as f64
                / 1000.0;
            let mut h = format!(
                "x-ratelimit-limit: {}\r\nx-ratelimit-remaining: {remaining}\r\nx-ratelimit-reset-after: {after:.3}\r\nx-ratelimit-bucket: c{channel}\r\n",
                Self::LIMIT
            );
            if global {
                h.push_str("x-ratelimit-global: true\r\nx-ratelimit-scope: global\r\n");
            }
            h
        };
        let in_global = s.global.filter(|&g| held(g));
        let answer = if let Some((until, _)) = in_global {
            s.exceeded_global += 1;
            let wait = until.saturating_duration_since(now).as_secs_f64();
            StormReply {
                headers: headers(0, until, true) + &format!("retry-after: {wait:.3}\r\n"),
                retry_after: Some((wait, true)),
            }
        } else if bucket.empty.is_some_and(held) || bucket.used >= Self::LIMIT {
            s.exceeded_route += 1;
            let until = bucket.empty.map_or(ends, |e| e.0.max(ends));
            bucket.empty.get_or_insert((until, now));
            StormReply {
                headers: headers(0, until, false)
                    + &format!(
                        "retry-after: {:.3}\r\n",
                        until.saturating_duration_since(now).as_secs_f64()
                    ),
                retry_after: Some((until.saturating_duration_since(now).as_secs_f64(), false)),
            }
        } else if s.replies.is_multiple_of(3) {
            let global = s.replies.is_multiple_of(15);
            let retry = if global {
                Self::GLOBAL_RETRY
            } else {
                Self::RETRY
            };
            let until = now + retry;
            if global {
                s.global_429s += 1;
                s.global = Some((until, now));
            } else {
                s.route_429s += 1;
                bucket.empty = Some((until, now));
            }
            StormReply {
                headers: headers(0, until, global)
                    + &format!("retry-after: {:.3}\r\n", retry.as_secs_f64()),
                retry_after: Some((retry.as_secs_f64(), global)),
            }
        } else {
            bucket.used += 1;
            if bucket.used == Self::LIMIT {
                bucket.empty = Some((ends, now));
            }
            s.delivered.push(reply);
            StormReply {
                headers: headers(Self::LIMIT - bucket.used, ends, false),
                retry_after: None,
            }
        };
        s.buckets.insert(channel, bucket);
        answer
    }
}

/// A connection's event queue and the `[id, total]` it identified with.
type Shard = (mpsc::UnboundedSender<(String, Value)>, (u64, u64));

struct FakeDiscord {
    proxy: String,
    /// Every gateway connection that has identified, in order.
    shards: Arc<std::sync::Mutex<Vec<Shard>>>,
    seen: Arc<Mutex<mpsc::UnboundedReceiver<Seen>>>,
}

impl FakeDiscord {
    /// REST in plain HTTP, for `discord.proxy` (serenity's rate limiter off).
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// REST over TLS as `discord.com` with Discord's rate limits (`storm`),
    /// and the client that reaches it there and trusts its certificate: the
    /// bot runs with serenity's rate limiter on, as in production.
    async fn start_tls(storm: Arc<Storm>) -> (Self, reqwest::Client) {
        let key = rcgen::generate_simple_self_signed(vec!["discord.com".to_string()]).unwrap();
        let cert_pem = key.cert.pem();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
        )
        .unwrap();
        let discord = Self::start_with(Some((
            tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            storm,
        )))
        .await;
        let rest: std::net::SocketAddr =
            discord.proxy.trim_start_matches("http://").parse().unwrap();
        let client = reqwest::Client::builder()
            .resolve("discord.com", rest)
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        (discord, client)
    }

    async fn start_with(tls: Option<(tokio_rustls::TlsAcceptor, Arc<Storm>)>) -> Self {
        let rest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}", rest.local_addr().unwrap());
        let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_url = format!("ws://{}", gateway.local_addr().unwrap());
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let url = gateway_url.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = rest.accept().await else {
                    return;
                };
                let (seen, url) = (seen_tx.clone(), gateway_url.clone());
                match &tls {
                    None => {
                        tokio::spawn(serve_rest(socket, seen, url, None));
                    }
                    Some((acceptor, storm)) => {
                        let (acceptor, storm) = (acceptor.clone(), storm.clone());
                        tokio::spawn(async move {
                            if let Ok(socket) = acceptor.accept(socket).await {
                                serve_rest(socket, seen, url, Some(storm)).await;
                            }
                        });
                    }
                }
            }
        });
        let shards = Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = shards.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = gateway.accept().await else {
                    return;
                };
                tokio::spawn(serve_gateway(socket, url.clone(), registry.clone()));
            }
        });
        Self {
            proxy,
            shards,
            seen: Arc::new(Mutex::new(seen_rx)),
        }
    }

    /// The `[id, total]` of each of the first `count` connections to identify.
    async fn identified(&self, count: usize) -> Vec<(u64, u64)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let shards: Vec<_> = self.shards.lock().unwrap().iter().map(|s| s.1).collect();
            if shards.len() >= count {
                return shards;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} shards identified within 60 s",
                shards.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests up to and including the next one whose method and path match.
    async fn until(&self, method: &str, path_part: &str) -> Vec<Seen> {
        let mut seen = self.seen.lock().await;
        let mut all = Vec::new();
        loop {
            let s = tokio::time::timeout(Duration::from_secs(60), seen.recv())
                .await
                .unwrap_or_else(|_| panic!("no {method} {path_part} within 60 s; saw {all:?}"))
                .unwrap();
            let done = s.method == method && s.path.contains(path_part);
            all.push(s);
            if done {
                return all;
            }
        }
    }

    async fn expect(&self, method: &str, path_part: &str) -> Seen {
        self.until(method, path_part).await.pop().unwrap()
    }

    /// Every request until `done` says the collection is complete, or the timeout.
    async fn collect(&self, timeout: Duration, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
        let mut seen = self.seen.lock().await;
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&all) {
            match tokio::time::timeout_at(deadline, seen.recv()).await {
                Ok(Some(s)) => all.push(s),
                _ => break,
            }
        }
        all
    }

    /// Sends an event as Discord does: on the shard of its guild,
    /// `(guild_id >> 22) % total`, of the connections that identified.
    fn send(&self, kind: &str, data: Value) {
        let guild: u64 = data["guild_id"].as_str().map_or(0, |g| g.parse().unwrap());
        let shards = self.shards.lock().unwrap();
        let (events, _) = shards
            .iter()
            .find(|(_, (id, total))| (guild >> 22) % total == *id)
            .unwrap_or_else(|| panic!("no shard connected for guild {guild}"));
        events.send((kind.to_owned(), data)).unwrap();
    }
}

/// One gateway connection: HELLO, then READY for the shard it identifies as,
/// heartbeat ACKs, and the events sent to that shard.
async fn serve_gateway(
    socket: tokio::net::TcpStream,
    url: String,
    shards: Arc<std::sync::Mutex<Vec<Shard>>>,
) {
    let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
    ws.send(Ws::text(
        json!({"op": 10, "d": {"heartbeat_interval": 45000}}).to_string(),
    ))
    .await
    .unwrap();
    let (events, mut event_rx) = mpsc::unbounded_channel::<(String, Value)>();
    let mut events = Some(events);
    let mut seq = 0;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Ws::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => return,
                };
                let v: Value = serde_json::from_str(&text).unwrap();
                match v["op"].as_u64() {
                    Some(2) => {
                        let shard = &v["d"]["shard"];
                        let shard = (shard[0].as_u64().unwrap(), shard[1].as_u64().unwrap());
                        seq += 1;
                        let ready = json!({"op": 0, "s": seq, "t": "READY", "d": {
                            "v": 10, "user": user(BOT, "yingshi", true), "guilds": [],
                            "session_id": format!("s{}", shard.0), "resume_gateway_url": url,
                            "shard": [shard.0, shard.1], "application": {"id": BOT, "flags": 0}}});
                        ws.send(Ws::text(ready.to_string())).await.unwrap();
                        if let Some(events) = events.take() {
                            shards.lock().unwrap().push((events, shard));
                        }
                    }
                    Some(1) => ws.send(Ws::text(json!({"op": 11}).to_string())).await.unwrap(),
                    _ => {}
                }
            }
            Some((kind, data)) = event_rx.recv() => {
                seq += 1;
                ws.send(Ws::text(json!({"op": 0, "s": seq, "t": kind, "d": data}).to_string())).await.unwrap();
            }
        }
    }
}

async fn serve_rest<S>(
    socket: S,
    seen: mpsc::UnboundedSender<Seen>,
    gateway_url: String,
    storm: Option<Arc<Storm>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(socket);
    let mut reader = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).await.unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await.unwrap();
        let body_json = if content_type.starts_with("multipart") {
            // payload_json part of a multipart body
            let text = String::from_utf8_lossy(&body).to_string();
            text.find('{')
                .and_then(|i| serde_json::from_str(&text[i..text.rfind('}').unwrap_or(i) + 1]).ok())
                .unwrap_or(Value::Null)
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let _ = seen.send(Seen {
            method: method.clone(),
            path: path.clone(),
            body: body_json.clone(),
        });
        if path.contains("/slow.png") {
            // Headers, then a byte every 100 ms: past any sane total timeout.
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 100000\r\n\r\n";
            if write.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(b"\x89").await.is_err() {
                    return;
                }
            }
            return;
        }
        let mut headers = String::new();
        let (status, kind, out): (&str, &str, Vec<u8>) = if let Some(reply) = storm
            .as_ref()
            .filter(|_| {
                method == "POST" && path.ends_with("/messages") && path.contains("/channels/")
            })
            .map(|storm| storm.answer(&path, &body_json))
        {
            headers = reply.headers;
            match reply.retry_after {
                None => (
                    "200 OK",
                    "application/json",
                    message("900", "", false, json!([])).to_string().into_bytes(),
                ),
                Some((retry_after, global)) => (
                    "429 Too Many Requests",
                    "application/json",
                    json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": global})
                        .to_string()
                        .into_bytes(),
                ),
            }
        } else if path.starts_with("/cdn.discordapp.com/") {
            let (kind, photo) = cdn_file(&path);
            ("200 OK", kind, photo)
        } else if path.contains("/oauth2/applications/@me") {
            let app = json!({"id": BOT, "name": "yingshi", "icon": null, "description": "", "bot_public": true,
                             "bot_require_code_grant": false, "verify_key": "k", "flags": 0, "owner": user("42", "poet", false)});
            ("200 OK", "application/json", app.to_string().into_bytes())
        } else if path.ends_with("/gateway") || path.ends_with("/gateway/bot") {
            let g = json!({"url": gateway_url, "shards": 1,
                           "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}});
            ("200 OK", "application/json", g.to_string().into_bytes())
        } else if path.contains("/commands") {
            ("200 OK", "application/json", b"[]".to_vec())
        } else if path.ends_with("/typing") || path.ends_with("/callback") {
            ("204 No Content", "application/json", Vec::new())
        } else if path.contains("/messages") || path.contains("/webhooks/") {
            (
                "200 OK",
                "application/json",
                message("900", "", false, json!([]))
                    .to_string()
                    .into_bytes(),
            )
        } else {
            (
                "404 Not Found",
                "application/json",
                b"{\"message\":\"unknown\",\"code\":0}".to_vec(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n{headers}\r\n",
            out.len()
        );
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// What the fake CDN serves for a path: the test photo, or, by the file's
/// name, something hostile that claims to be one.
fn cdn_file(path: &str) -> (&'static str, Vec<u8>) {
    let photo = || {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/chelsea.png"),
        )
        .unwrap()
    };
    let name = path
        .split('?')
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("");
    match name {
        "bomb.png" => ("image/png", common::png_claiming(60_000, 60_000)),
        // Declared 1 KiB, served 2 MiB: past the byte cap.
        "liar-size.png" => ("image/png", vec![0x89; 2 << 20]),
        "liar-type.png" => (
            "image/png",
            b"<html><body>not a photo</body></html>".to_vec(),
        ),
        "truncated.png" => ("image/png", photo()[..2000].to_vec()),
        "archive.jpg" => (
            "image/jpeg",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00".repeat(100),
        ),
        _ => ("image/png", photo()),
    }
}

fn start_bot(discord: &FakeDiscord, state_file: &Path, cache: &Path) {
    start_bot_with(discord, state_file, cache, &[]);
}

fn start_bot_with(discord: &FakeDiscord, state_file: &Path, cache: &Path, extra: &[(&str, &str)]) {
    start_bot_on(Some(&discord.proxy), None, state_file, cache, extra);
}

/// The bot against the fake: through `discord.proxy` (rate limiter off), or
/// through `client` to the fake over TLS (rate limiter on).
fn start_bot_on(
    proxy: Option<&str>,
    client: Option<reqwest::Client>,
    state_file: &Path,
    cache: &Path,
    extra: &[(&str, &str)],
) {
    let mut env = vec![
        ("DISCORD_TOKEN", "test-token".to_string()),
        ("YINGSHI_DISCORD__PROXY", proxy.unwrap_or("").to_string()),
        (
            "YINGSHI_DISCORD__STATE_FILE",
            state_file.display().to_string(),
        ),
        (
            "YINGSHI_MODELS__CLIP_DIR",
            "tests/fixtures/clip-tiny".to_string(),
        ),
        ("YINGSHI_MODELS__CACHE_DIR", cache.display().to_string()),
        ("YINGSHI_POEM__CANDIDATES", "2".to_string()),
        ("YINGSHI_LIMITS__USER_PER_MINUTE", "100".to_string()),
        ("YINGSHI_LIMITS__CHANNEL_PER_MINUTE", "100".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let config = yingshi::config::Config::load_with_env(
        None,
        env.into_iter().map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let placement = config.placement().unwrap();
    let poet = yingshi::poem::Poet::load(
        &yingshi::config::Config::resolve(&config.models.poet_dir),
        &placement.device,
        placement.dtype,
    )
    .unwrap();
    let matcher = yingshi::pipeline::Matcher::load(&config, None, None, &placement).unwrap();
    let mut pipeline = yingshi::pipeline::Pipeline::new(&config, poet, Some(matcher));
    pipeline.attach_jiju(
        yingshi::poem::JijuPoet::load(&yingshi::config::Config::resolve(&config.models.jiju_dir))
            .unwrap(),
    );
    tokio::spawn(async move {
        if let Err(e) = yingshi::bot::run_with_client(config, pipeline, client).await {
            panic!("the bot stopped: {e}");
        }
    });
}

/// A new fake Discord and a new bot on the same state file, connected.
async fn restarted(state_file: &Path, cache: &Path) -> FakeDiscord {
    let discord = FakeDiscord::start().await;
    start_bot(&discord, state_file, cache);
    discord.expect("PUT", "/applications/100/commands").await;
    discord
}

/// What `/config show` (by an admin) answers.
async fn config_show(discord: &FakeDiscord, id: &str) -> String {
    let show = json!([{"name": "show", "type": 1, "options": []}]);
    discord.send("INTERACTION_CREATE", slash(id, "config", show, "16"));
    let path = format!("/interactions/{id}/tok{id}/callback");
    discord.expect("POST", &path).await.text().to_owned()
}

fn cdn_requests(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|s| s.path.starts_with("/cdn.discordapp.com/"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photo_posts_slash_commands_and_settings() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    start_bot(&discord, &state_file, dir.path());
    discord.expect("GET", "/api/v10/gateway").await;
    // poise registers the slash commands once READY arrives.
    let registered = discord.expect("PUT", "/applications/100/commands").await;
    let names: Vec<&str> = registered
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["poem", "check", "keywords", "config"]);

    // A photo post that mentions the bot: typing, the download, a reply with keywords and poem.
    discord.send("MESSAGE_CREATE", photo_post("501", CHANNEL, "42"));
    let seen = discord.until("POST", "/channels/200/messages").await;
    assert!(seen
        .iter()
        .any(|s| s.path.ends_with("/channels/200/typing")));
    assert_eq!(cdn_requests(&seen), 1);
    let reply = seen.last().unwrap().body.clone();
    assert_eq!(reply["message_reference"]["message_id"], "501");
    let embed = &reply["embeds"][0];
    let description = embed["description"].as_str().unwrap();
    assert!(description.starts_with("意象："), "{description}");
    assert_eq!(imagery(embed).len(), 4, "{description}");
    let lines = poem_lines(embed);
    assert_eq!(lines.len(), 4, "{description}");
    let again = reply["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(again.starts_with("yingshi:again:七绝:"), "{again}");
    let menu = &reply["components"][1]["components"][0];
    let options: Vec<&str> = menu["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(options.len(), 4);
    assert_eq!(options[1], format!("第二句：{}", lines[1]));

    // 换一句 on line 2: acknowledged, then the message edited with a new line
    // 2; the other lines, the keywords with their scores and the photo stay.
    discord.send(
        "INTERACTION_CREATE",
        press(
            "720",
            "42",
            json!({"custom_id": menu["custom_id"], "component_type": 3, "values": ["1"]}),
            &reply,
        ),
    );
    let ack = discord
        .expect("POST", "/interactions/720/tok720/callback")
        .await;
    assert_eq!(ack.body["type"], 6);
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok720/messages/@original")
        .await;
    let edited = &edit.body["embeds"][0];
    let new_lines = poem_lines(edited);
    assert_eq!(new_lines.len(), 4, "{edited}");
    assert_ne!(new_lines[1], lines[1]);
    assert_eq!(
        [&new_lines[0], &new_lines[2], &new_lines[3]],
        [&lines[0], &lines[2], &lines[3]]
    );
    assert_eq!(
        edited["description"].as_str().unwrap().lines().next(),
        description.lines().next()
    );
    assert_eq!(edited["thumbnail"]["url"], embed["thumbnail"]["url"]);
    assert_eq!(
        edit.body["components"][1]["components"][0]["options"][1]["label"],
        format!("第二句：{}", new_lines[1])
    );

    // 换一首: a whole new poem under the same keywords and photo.
    discord.send(
        "INTERACTION_CREATE",
        press(
            "721",
            "42",
            json!({"custom_id": again, "component_type": 2}),
            &reply,
        ),
    );
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok721/messages/@original")
        .await;
    let edited = &edit.body["embeds"][0];
    assert_eq!(poem_lines(edited).len(), 4, "{edited}");
    assert_ne!(poem_lines(edited), lines);
    assert_eq!(imagery(edited), imagery(embed));
    assert_eq!(edited["thumbnail"]["url"], embed["thumbnail"]["url"]);

    // 集句: a poem of real lines from the same keywords, each line credited,
    // under a 原创 button that goes back; its 换一句 puts another real line in.
    let jiju = reply["components"][0]["components"][1].clone();
    assert_eq!(jiju["label"], "集句");
    discord.send(
        "INTERACTION_CREATE",
        press(
            "722",
            "42",
            json!({"custom_id": jiju["custom_id"], "component_type": 2}),
            &reply,
        ),
    );
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok722/messages/@original")
        .await;
    let edited = &edit.body["embeds"][0];
    let jiju_lines = poem_lines(edited);
    assert_eq!(jiju_lines.len(), 4, "{edited}");
    let credited = credits(edited);
    assert!(
        credited
            .iter()
            .all(|c| c.contains('《') && c.ends_with('》')),
        "{edited}"
    );
    assert!(
        yingshi::poem::checker::check_lines(&jiju_lines).pass,
        "{jiju_lines:?}"
    );
    assert_eq!(imagery(edited), imagery(embed));
    assert!(edited["footer"]["text"]
        .as_str()
        .unwrap()
        .starts_with("集句"));
    let buttons = &edit.body["components"][0]["components"];
    assert_eq!(buttons[1]["label"], "原创");
    assert!(buttons[0]["custom_id"]
        .as_str()
        .unwrap()
        .starts_with("yingshi:again.jiju:七绝:"));
    let jiju_menu = edit.body["components"][1]["components"][0].clone();
    let jiju_message = json!({"embeds": [edited]});
    discord.send(
        "INTERACTION_CREATE",
        press(
            "723",
            "42",
            json!({"custom_id": jiju_menu["custom_id"], "component_type": 3, "values": ["2"]}),
            &jiju_message,
        ),
    );
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok723/messages/@original")
        .await;
    let rewritten = &edit.body["embeds"][0];
    let new_lines = poem_lines(rewritten);
    assert_ne!(new_lines[2], jiju_lines[2], "{rewritten}");
    assert_eq!(
        [&new_lines[0], &new_lines[1], &new_lines[3]],
        [&jiju_lines[0], &jiju_lines[1], &jiju_lines[3]]
    );
    assert!(
        yingshi::poem::checker::check_lines(&new_lines).pass,
        "{new_lines:?}"
    );
    let new_credits = credits(rewritten);
    assert!(new_credits[2].contains('《'), "{rewritten}");
    assert_eq!(new_credits[0], credited[0]);

    // Not a photo, not Discord's CDN, too large: a friendly word and no download.
    for (bad, says) in [
        (
            attachment("notes.txt", "cdn.discordapp.com", 100, "text/plain"),
            "not a photo",
        ),
        (
            attachment("cat.png", "evil.example.com", 100, "image/png"),
            "not a Discord attachment",
        ),
        (
            attachment("huge.png", "cdn.discordapp.com", 30 << 20, "image/png"),
            "I take photos up to",
        ),
    ] {
        discord.send(
            "MESSAGE_CREATE",
            message("502", "<@100> look", true, json!([bad])),
        );
        let seen = discord.until("POST", "/channels/200/messages").await;
        assert_eq!(cdn_requests(&seen), 0);
        let content = seen.last().unwrap().text();
        assert!(content.contains(says), "{content}");
    }

    // /poem with keywords: deferred at once; the poem then replaces the "thinking…".
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "701",
            "poem",
            json!([{"name": "keywords", "type": 3, "value": "春风 明月"}]),
            "0",
        ),
    );
    let callback = discord
        .expect("POST", "/interactions/701/tok701/callback")
        .await;
    assert_eq!(callback.body["type"], 5);
    let edit = discord.expect("POST", "/webhooks/100/tok701").await;
    let description = edit.body["embeds"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("春风")
            && description.lines().filter(|l| l.starts_with("**")).count() == 4,
        "{description}"
    );

    // /poem with nothing: a helpful ephemeral answer.
    discord.send("INTERACTION_CREATE", slash("702", "poem", json!([]), "0"));
    let help = discord
        .expect("POST", "/interactions/702/tok702/callback")
        .await;
    assert!(help.text().contains("关键词"));
    assert_eq!(help.body["data"]["flags"], 64);

    // Admin commands: refused without Manage Channels, checked values with it.
    let set = |id: &str, key: &str, value: &str, permissions: &str| {
        slash(
            id,
            "config",
            json!([{"name": "set", "type": 1, "options": [
            {"name": "key", "type": 3, "value": key}, {"name": "value", "type": 3, "value": value}]}]),
            permissions,
        )
    };
    discord.send("INTERACTION_CREATE", set("703", "top_k", "6", "0"));
    let refused = discord
        .expect("POST", "/interactions/703/tok703/callback")
        .await;
    assert!(refused.text().contains("管理频道"));
    discord.send("INTERACTION_CREATE", set("704", "top_k", "40", "16"));
    let bad = discord
        .expect("POST", "/interactions/704/tok704/callback")
        .await;
    assert!(bad.text().contains("1 to 16"));
    discord.send("INTERACTION_CREATE", set("705", "top_k", "6", "16"));
    let ok = discord
        .expect("POST", "/interactions/705/tok705/callback")
        .await;
    assert!(ok.text().contains("top_k = 6"));
    // The channel's top_k reaches its photos.
    discord.send("MESSAGE_CREATE", photo_post("503", CHANNEL, "42"));
    let seen = discord.until("POST", "/channels/200/messages").await;
    assert_eq!(imagery(&seen.last().unwrap().body["embeds"][0]).len(), 6);
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "706",
            "keywords",
            json!([{"name": "add", "type": 1, "options": [
        {"name": "words", "type": 3, "value": "狸奴 渔舟"}]}]),
            "16",
        ),
    );
    discord
        .expect("POST", "/interactions/706/tok706/callback")
        .await;

    // The LLM poet is a channel's choice only where the bot has loaded one.
    discord.send("INTERACTION_CREATE", set("7060", "poet", "llm", "16"));
    let refused = discord
        .expect("POST", "/interactions/7060/tok7060/callback")
        .await;
    assert!(
        refused.text().contains("没有加载大模型"),
        "{:?}",
        refused.body
    );

    // 集句 by /poem's style option, and as the channel's style for its photos.
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "7061",
            "poem",
            json!([{"name": "keywords", "type": 3, "value": "明月 孤舟"},
                   {"name": "style", "type": 4, "value": 1}]),
            "0",
        ),
    );
    let edit = discord.expect("POST", "/webhooks/100/tok7061").await;
    let credited = credits(&edit.body["embeds"][0]);
    assert_eq!(credited.len(), 4, "{:?}", edit.body);
    assert!(credited.iter().all(|c| c.contains('《')), "{credited:?}");
    discord.send("INTERACTION_CREATE", set("7062", "style", "jiju", "16"));
    let ok = discord
        .expect("POST", "/interactions/7062/tok7062/callback")
        .await;
    assert!(ok.text().contains("style = jiju"), "{:?}", ok.body);
    discord.send("MESSAGE_CREATE", photo_post("504", CHANNEL, "42"));
    let seen = discord.until("POST", "/channels/200/messages").await;
    let photo_jiju = &seen.last().unwrap().body;
    assert!(
        credits(&photo_jiju["embeds"][0])
            .iter()
            .all(|c| c.contains('《')),
        "{photo_jiju}"
    );
    assert_eq!(
        photo_jiju["components"][0]["components"][1]["label"],
        "原创"
    );
    discord.send("INTERACTION_CREATE", set("7063", "style", "generate", "16"));
    discord
        .expect("POST", "/interactions/7063/tok7063/callback")
        .await;

    // A user cooldown: the second request within it is told to wait.
    discord.send(
        "INTERACTION_CREATE",
        set("707", "user_cooldown", "60", "16"),
    );
    discord
        .expect("POST", "/interactions/707/tok707/callback")
        .await;
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "708",
            "poem",
            json!([{"name": "keywords", "type": 3, "value": "孤舟"}]),
            "0",
        ),
    );
    discord.expect("POST", "/webhooks/100/tok708").await;
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "709",
            "poem",
            json!([{"name": "keywords", "type": 3, "value": "孤舟"}]),
            "0",
        ),
    );
    let wait = discord
        .expect("POST", "/interactions/709/tok709/callback")
        .await;
    assert!(wait.text().contains("try again in"), "{:?}", wait.body);

    // A restart: a new bot from the same snapshot, on a new connection.
    let discord = restarted(&state_file, dir.path()).await;
    let shown = config_show(&discord, "730").await;
    assert!(
        shown.contains("top_k = 6") && shown.contains("user_cooldown = 60 s"),
        "{shown}"
    );
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "731",
            "keywords",
            json!([{"name": "list", "type": 1, "options": []}]),
            "0",
        ),
    );
    let listed = discord
        .expect("POST", "/interactions/731/tok731/callback")
        .await;
    assert!(listed.text().contains("狸奴　渔舟"));

    // Keyword autocomplete offers the channel's list for the word being typed.
    discord.send("INTERACTION_CREATE", autocomplete("732", "春风 狸"));
    let offered = discord
        .expect("POST", "/interactions/732/tok732/callback")
        .await;
    assert_eq!(offered.body["type"], 8);
    let choices: Vec<&str> = offered.body["data"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_str().unwrap())
        .collect();
    assert_eq!(choices, ["春风 狸奴"]);

    // The first run's buttons still work.
    discord.send(
        "INTERACTION_CREATE",
        press(
            "733",
            "42",
            json!({"custom_id": again, "component_type": 2}),
            &reply,
        ),
    );
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok733/messages/@original")
        .await;
    assert_eq!(poem_lines(&edit.body["embeds"][0]).len(), 4);

    // Adding words kept the built-in list: a photo still gets its six keywords.
    discord.send("MESSAGE_CREATE", photo_post("734", CHANNEL, "43"));
    let seen = discord.until("POST", "/channels/200/messages").await;
    assert_eq!(imagery(&seen.last().unwrap().body["embeds"][0]).len(), 6);

    // Only the channel's own words, once an admin says so.
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "735",
            "keywords",
            json!([{"name": "use", "type": 1, "options": [
        {"name": "list", "type": 3, "value": "custom"}]}]),
            "16",
        ),
    );
    let used = discord
        .expect("POST", "/interactions/735/tok735/callback")
        .await;
    assert!(used.text().contains("只用"), "{:?}", used.body);
    discord.send("MESSAGE_CREATE", photo_post("736", CHANNEL, "44"));
    let seen = discord.until("POST", "/channels/200/messages").await;
    let mut matched = imagery(&seen.last().unwrap().body["embeds"][0]);
    matched.sort();
    assert_eq!(matched, ["渔舟", "狸奴"]);
}

/// Two processes, shards 0/2 and 1/2: each identifies as its shard, answers
/// the events of its guilds, and keeps their channels' settings in its own
/// state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_answer_their_own_guilds() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    for shards in ["0/2", "1/2"] {
        start_bot_with(
            &discord,
            &state_file,
            dir.path(),
            &[("YINGSHI_DISCORD__SHARDS", shards)],
        );
    }
    let mut identified = discord.identified(2).await;
    identified.sort();
    assert_eq!(identified, [(0, 2), (1, 2)]);
    for _ in 0..2 {
        discord.expect("PUT", "/applications/100/commands").await;
    }

    // Guild 300 is on shard 0; guild 1 << 22 on shard 1.
    let (guild_a, channel_a) = ("300", "200");
    let (guild_b, channel_b) = ((1u64 << 22).to_string(), "201");
    let in_guild = |mut event: Value, guild: &str| {
        event["guild_id"] = json!(guild);
        event
    };
    let set_form = slash_from(
        "740",
        channel_b,
        "42",
        "config",
        json!([{"name": "set", "type": 1, "options": [
            {"name": "key", "type": 3, "value": "form"}, {"name": "value", "type": 3, "value": "七律"}]}]),
        "16",
    );
    discord.send("INTERACTION_CREATE", in_guild(set_form, &guild_b));
    let ok = discord
        .expect("POST", "/interactions/740/tok740/callback")
        .await;
    assert!(ok.text().contains("form = 七律"), "{:?}", ok.body);
    let saved = |shard: &str| {
        std::fs::read_to_string(
            dir.path()
                .join(format!("state.shards-{shard}-{shard}-of-2.json")),
        )
        .unwrap_or_default()
    };
    assert!(
        saved("1").contains(&format!("\"{channel_b}\"")),
        "{}",
        saved("1")
    );
    assert!(!saved("0").contains(channel_b), "{}", saved("0"));
    assert!(
        !state_file.exists(),
        "neither process writes the shared file"
    );

    // A photo in each guild: one answer each, from the process that has the
    // channel's settings (七律 in guild B's channel, the default 七绝 in A's).
    discord.send(
        "MESSAGE_CREATE",
        in_guild(photo_post("541", channel_a, "42"), guild_a),
    );
    discord.send(
        "MESSAGE_CREATE",
        in_guild(photo_post("542", channel_b, "43"), &guild_b),
    );
    let replies = |seen: &[Seen], channel: &str| -> Vec<Value> {
        seen.iter()
            .filter(|s| {
                s.method == "POST" && s.path.ends_with(&format!("/channels/{channel}/messages"))
            })
            .map(|s| s.body.clone())
            .collect()
    };
    let seen = discord
        .collect(Duration::from_secs(60), |seen| {
            replies(seen, channel_a).len() + replies(seen, channel_b).len() >= 2
        })
        .await;
    // Anything a second process would have sent comes within a few seconds.
    let late = discord.collect(Duration::from_secs(3), |_| false).await;
    let seen = [seen, late].concat();
    let (a, b) = (replies(&seen, channel_a), replies(&seen, channel_b));
    assert_eq!((a.len(), b.len()), (1, 1), "{seen:?}");
    assert_eq!(a[0]["message_reference"]["message_id"], "541");
    assert_eq!(poem_lines(&a[0]["embeds"][0]).len(), 4);
    assert_eq!(b[0]["message_reference"]["message_id"], "542");
    assert_eq!(poem_lines(&b[0]["embeds"][0]).len(), 8);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 1,000 photo posts and /poem commands from 100 users in 5 channels, one
/// every 3 ms: every one is answered with a poem or a
/// polite refusal (rate limit, full queue), nothing panics, memory stays bounded.
/// The small test models keep it to seconds; the figures print for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_run_answers_everyone() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    start_bot_with(
        &discord,
        &dir.path().join("state.json"),
        dir.path(),
        &[
            ("YINGSHI_MODELS__POET_DIR", "tests/fixtures/t5-tiny"),
            ("YINGSHI_POEM__FORM", "五绝"),
            ("YINGSHI_LIMITS__USER_PER_MINUTE", "6"),
            ("YINGSHI_LIMITS__CHANNEL_PER_MINUTE", "30"),
            ("YINGSHI_LIMITS__QUEUE_SIZE", "16"),
        ],
    );
    discord.expect("PUT", "/applications/100/commands").await;
    let rss_before = rss_kib();
    let start = std::time::Instant::now();
    let (mut posts, mut commands) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let id = format!("{}", 10_000 + i);
        let author = format!("{}", 1_000 + i % 100);
        let channel = format!("{}", 200 + i % 5);
        if i % 2 == 0 {
            discord.send("MESSAGE_CREATE", photo_post(&id, &channel, &author));
            posts.push(id);
        } else {
            let options = json!([{"name": "keywords", "type": 3, "value": "春风 明月"}]);
            discord.send(
                "INTERACTION_CREATE",
                slash_from(&id, &channel, &author, "poem", options, "0"),
            );
            commands.push(id);
        }
        // A busy server rather than one burst: a request every 3 ms.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let replied = |seen: &[Seen], id: &str| {
        seen.iter().any(|s| {
            s.method == "POST"
                && s.path.ends_with("/messages")
                && s.body["message_reference"]["message_id"] == id
        })
    };
    // A command's answer: a refusal in the callback, or a poem (or refusal) in
    // the follow-up, or in the edit of a "queued" follow-up.
    let answered_command = |seen: &[Seen], id: &str| {
        let callback = seen
            .iter()
            .find(|s| s.path.contains(&format!("/interactions/{id}/")));
        match callback {
            Some(c) if c.body["type"] == 4 => true,
            Some(_) => seen.iter().any(|s| {
                s.path.contains(&format!("/webhooks/100/tok{id}"))
                    && (s.body["embeds"][0]["title"].is_string() || s.text().contains("try again"))
            }),
            None => false,
        }
    };
    let seen = discord
        .collect(Duration::from_secs(240), |seen| {
            // Cheap check first: enough requests for every event to have its answer.
            seen.len() >= 1000
                && posts.iter().all(|id| replied(seen, id))
                && commands.iter().all(|id| answered_command(seen, id))
        })
        .await;
    let elapsed = start.elapsed();
    let unanswered_posts = posts.iter().filter(|id| !replied(&seen, id)).count();
    let unanswered_commands = commands
        .iter()
        .filter(|id| !answered_command(&seen, id))
        .count();
    let poems = seen
        .iter()
        .filter(|s| {
            s.body["embeds"][0]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("影诗"))
        })
        .count();
    let slowed = seen
        .iter()
        .filter(|s| s.text().contains("slow down"))
        .count();
    let queue_full = seen
        .iter()
        .filter(|s| s.text().contains("already waiting"))
        .count();
    let limited = slowed + queue_full;
    let rss_growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    for s in &seen {
        let text = s.text();
        if !text.is_empty() && !text.contains("try again") && !text.starts_with("排队中") {
            println!("other answer: {} {}: {text}", s.method, s.path);
        }
    }
    println!(
        "load run: 1000 events from 100 users in {:.1} s: {poems} poems, {slowed} told to slow down, \
         {queue_full} told the queue is full, {unanswered_posts}+{unanswered_commands} unanswered, RSS +{rss_growth_mib} MiB",
        elapsed.as_secs_f64()
    );
    assert_eq!((unanswered_posts, unanswered_commands), (0, 0));
    assert_eq!(
        poems + limited,
        1000,
        "every event gets a poem or a refusal, once"
    );
    // More poems than the queue holds: it drained and took more while the burst went on.
    assert!(poems > 16, "{poems} poems");
    assert!(slowed > 0 && queue_full > 0, "both limits were reached");
    assert!(rss_growth_mib < 300, "RSS grew by {rss_growth_mib} MiB");
}

/// The poem workshop: /check as an embed (a regular poem typed in traditional
/// characters, one with three faults, text that is no poem), and your own
/// line through the modal (a line that fits kept and the rest written on to
/// pass the check, with and without the lines before it; a line that breaks
/// 粘 refused with its fault and the poem left alone; the same after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workshop_checks_poems_and_takes_your_own_line() {
    use yingshi::poem::checker::check_lines;
    let _alone = ONE_AT_A_TIME.lock().await;
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    start_bot(&discord, &state_file, dir.path());
    discord.expect("PUT", "/applications/100/commands").await;

    let check = |id: &str, poem: &str| {
        slash(
            id,
            "check",
            json!([{"name": "poem", "type": 3, "value": poem}]),
            "0",
        )
    };
    discord.send(
        "INTERACTION_CREATE",
        check(
            "740",
            "朝辭白帝彩雲間，千里江陵一日還。\n兩岸猿聲啼不住，輕舟已過萬重山。",
        ),
    );
    let answer = discord
        .expect("POST", "/interactions/740/tok740/callback")
        .await;
    let embed = &answer.body["data"]["embeds"][0];
    assert_eq!(embed["title"], "格律检查 · 七绝", "{embed}");
    let description = embed["description"].as_str().unwrap();
    assert!(
        description.contains("**千里江陵一日還**　`平仄平平仄仄平`　韵")
            && description.contains("韵部：上平十五删"),
        "{description}"
    );
    assert_eq!(embed["fields"][0]["value"], "合律 ✓", "{embed}");

    discord.send(
        "INTERACTION_CREATE",
        check("741", "白日依山尽 白河入海流 欲穷千里目 更上千层来"),
    );
    let answer = discord
        .expect("POST", "/interactions/741/tok741/callback")
        .await;
    let embed = &answer.body["data"]["embeds"][0];
    assert_eq!(embed["fields"][0]["name"], "不合之处（3 处）", "{embed}");
    assert_eq!(
        embed["fields"][0]["value"],
        "第2句第1字孤平\n第2句第5字出韵\n第4句第3字三平尾"
    );
    assert_eq!(embed["fields"][1]["value"], "不合律");

    for (id, text, says) in [
        ("742", "hello world", "只能有汉字"),
        ("743", "春风又绿江南岸", "这里有 1 句"),
        ("744", &"春".repeat(300), "太长了"),
    ] {
        discord.send("INTERACTION_CREATE", check(id, text));
        let answer = discord
            .expect("POST", &format!("/interactions/{id}/tok{id}/callback"))
            .await;
        assert_eq!(answer.body["data"]["flags"], 64, "{:?}", answer.body);
        assert!(answer.text().contains(says), "{:?}", answer.body);
        assert!(!answer.text().contains("写不成诗"), "{:?}", answer.body);
    }

    // A 七绝 to work on, with its 自己写一句 button.
    discord.send(
        "INTERACTION_CREATE",
        slash(
            "750",
            "poem",
            json!([{"name": "keywords", "type": 3, "value": "孤舟 明月"},
                   {"name": "form", "type": 4, "value": 1}]),
            "0",
        ),
    );
    let posted = discord.expect("POST", "/webhooks/100/tok750").await.body;
    let lines = poem_lines(&posted["embeds"][0]);
    assert_eq!(lines.len(), 4, "{posted}");
    let own = posted["components"][0]["components"][2].clone();
    assert_eq!(own["label"], "自己写一句", "{posted}");
    let own_id = own["custom_id"].as_str().unwrap().to_owned();
    discord.send(
        "INTERACTION_CREATE",
        press(
            "751",
            "42",
            json!({"custom_id": own_id, "component_type": 2}),
            &posted,
        ),
    );
    let modal = discord
        .expect("POST", "/interactions/751/tok751/callback")
        .await;
    assert_eq!(modal.body["type"], 9, "{:?}", modal.body);
    assert_eq!(modal.body["data"]["custom_id"], own_id.as_str());
    assert_eq!(
        modal.body["data"]["components"].as_array().unwrap().len(),
        3
    );

    // Famous third lines, one of each 粘: one fits this poem's line 3, one breaks 粘.
    let with_line_3 = |line: &str| {
        let mut poem = lines.clone();
        poem[2] = line.to_owned();
        check_lines(&poem).violations
    };
    let pool = [
        "两岸猿声啼不住",
        "借问酒家何处有",
        "窗含西岭千秋雪",
        "劝君更尽一杯酒",
    ];
    let fits = *pool
        .iter()
        .find(|l| with_line_3(l).iter().all(|v| v.line > 3))
        .expect("one of them fits");
    let breaks = *pool
        .iter()
        .find(|l| {
            with_line_3(l)
                .iter()
                .any(|v| v.line == 3 && v.rule.name() == "失粘")
        })
        .expect("one of them breaks 粘");

    let submit = |id: &str, line: &str, text: &str, before: &str| {
        modal_submit(
            id,
            &own_id,
            &[("line", line), ("text", text), ("before", before)],
            &posted,
        )
    };
    discord.send("INTERACTION_CREATE", submit("752", "3", fits, ""));
    let ack = discord
        .expect("POST", "/interactions/752/tok752/callback")
        .await;
    assert_eq!(ack.body["type"], 6);
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok752/messages/@original")
        .await;
    let new_lines = poem_lines(&edit.body["embeds"][0]);
    assert_eq!(new_lines[..3], [lines[0].as_str(), lines[1].as_str(), fits]);
    assert!(check_lines(&new_lines).pass, "{new_lines:?}");
    assert_eq!(
        edit.body["components"][0]["components"][2]["label"],
        "自己写一句"
    );

    // 是: the lines before yours are written anew too.
    discord.send("INTERACTION_CREATE", submit("753", "3", fits, "是"));
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok753/messages/@original")
        .await;
    let new_lines = poem_lines(&edit.body["embeds"][0]);
    assert_eq!(new_lines[2], fits);
    assert!(
        new_lines[0] != lines[0] && new_lines[1] != lines[1],
        "{new_lines:?}"
    );
    assert!(check_lines(&new_lines).pass, "{new_lines:?}");

    // A line that breaks 粘: refused to the writer with its fault, no edit.
    discord.send("INTERACTION_CREATE", submit("754", "3", breaks, ""));
    let seen = discord.until("POST", "/webhooks/100/tok754").await;
    let refusal = seen.last().unwrap();
    assert!(
        refusal.text().contains("第3句第2字失粘"),
        "{:?}",
        refusal.body
    );
    assert_eq!(refusal.body["flags"], 64);
    assert!(!seen.iter().any(|s| s.method == "PATCH"), "{seen:?}");
    // No such line: said in answer to the submission.
    discord.send("INTERACTION_CREATE", submit("755", "9", fits, ""));
    let answer = discord
        .expect("POST", "/interactions/755/tok755/callback")
        .await;
    assert!(answer.text().contains("请填 1 到 4"), "{:?}", answer.body);
    assert_eq!(answer.body["data"]["flags"], 64);
    // Not a line of seven characters: said to the writer, no edit.
    discord.send("INTERACTION_CREATE", submit("756", "3", "孤舟", ""));
    let seen = discord.until("POST", "/webhooks/100/tok756").await;
    assert!(
        seen.last().unwrap().text().contains("要 7 个字"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.method == "PATCH"), "{seen:?}");

    // After a restart the modal's id and the message still carry all it needs.
    let discord = restarted(&state_file, dir.path()).await;
    discord.send("INTERACTION_CREATE", submit("757", "3", fits, ""));
    let edit = discord
        .expect("PATCH", "/webhooks/100/tok757/messages/@original")
        .await;
    let new_lines = poem_lines(&edit.body["embeds"][0]);
    assert_eq!(new_lines[..3], [lines[0].as_str(), lines[1].as_str(), fits]);
    assert!(check_lines(&new_lines).pass, "{new_lines:?}");
}

/// A full disk under the state file (its temporary file is `/dev/full`, where
/// every write fails with ENOSPC): `/config set` confirms nothing, says why,
/// and the setting stays as it was; once there is room the next change is
/// saved and survives a restart, and the refused one does not come back.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_confirms_nothing_and_the_bot_recovers() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    start_bot(&discord, &state_file, dir.path());
    discord.expect("PUT", "/applications/100/commands").await;
    let set = |id: &str, key: &str, value: &str| {
        let options = json!([{"name": "set", "type": 1, "options": [
            {"name": "key", "type": 3, "value": key}, {"name": "value", "type": 3, "value": value}]}]);
        slash(id, "config", options, "16")
    };
    let answer = |id: &'static str| {
        let discord = &discord;
        async move {
            discord
                .expect("POST", &format!("/interactions/{id}/tok{id}/callback"))
                .await
                .text()
                .to_owned()
        }
    };
    discord.send("INTERACTION_CREATE", set("760", "form", "七律"));
    assert!(answer("760").await.contains("form = 七律"));

    let tmp = state_file.with_extension("json.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    discord.send("INTERACTION_CREATE", set("761", "top_k", "9"));
    let refused = answer("761").await;
    assert!(
        refused.contains("什么也没改") && !refused.contains("已设置"),
        "{refused}"
    );
    let shown = config_show(&discord, "762").await;
    assert!(
        shown.contains("form = 七律") && shown.contains("top_k = 4"),
        "{shown}"
    );

    std::fs::remove_file(&tmp).unwrap();
    discord.send("INTERACTION_CREATE", set("763", "candidates", "3"));
    assert!(answer("763").await.contains("candidates = 3"));

    let discord = restarted(&state_file, dir.path()).await;
    let shown = config_show(&discord, "764").await;
    assert!(
        shown.contains("form = 七律")
            && shown.contains("candidates = 3")
            && shown.contains("top_k = 4"),
        "{shown}"
    );
}

/// A gateway event that is malformed, truncated or hostile, the `i`-th of a
/// dozen kinds: what serenity cannot read it drops; what it can, the bot
/// answers or ignores without harm.
fn malformed_event(i: usize) -> (&'static str, Value) {
    let id = format!("{}", 50_000 + i);
    let author = format!("{}", 60_000 + i);
    let post = || message_from(&id, CHANNEL, &author, "<@100>", true, json!([]));
    let with = |mut v: Value, key: &str, value: Value| {
        v[key] = value;
        v
    };
    let press_on = |custom_id: String, values: Value| {
        let poem = json!({"embeds": [{"description": "**白日依山尽**\n**黄河入海流**"}]});
        let mut v = press(
            &id,
            &author,
            json!({"custom_id": custom_id, "component_type": 3, "values": values}),
            &poem,
        );
        v["member"]["user"]["id"] = json!(author);
        v
    };
    match i % 12 {
        0 => {
            let mut v = post();
            v.as_object_mut().unwrap().remove("author");
            ("MESSAGE_CREATE", v)
        }
        1 => (
            "MESSAGE_CREATE",
            with(post(), "id", json!({"not": "an id"})),
        ),
        2 => (
            "MESSAGE_CREATE",
            with(post(), "content", json!("春".repeat(20_000))),
        ),
        3 => {
            let notes: Vec<Value> = (0..300)
                .map(|_| attachment("notes.txt", "cdn.discordapp.com", 10, "text/plain"))
                .collect();
            ("MESSAGE_CREATE", with(post(), "attachments", json!(notes)))
        }
        4 => (
            "INTERACTION_CREATE",
            press_on("yingshi:line:五绝::春风".into(), json!(["99"])),
        ),
        5 => (
            "INTERACTION_CREATE",
            press_on(format!("yingshi:{}", "乱".repeat(95)), json!(["0"])),
        ),
        6 => {
            let mut v = press_on("yingshi:own:五绝::春风".into(), json!([]));
            v["type"] = json!(5);
            v["data"] = json!({"custom_id": "yingshi:own:五绝::春风", "components": []});
            v.as_object_mut().unwrap().remove("message");
            ("INTERACTION_CREATE", v)
        }
        7 => (
            "INTERACTION_CREATE",
            slash_from(&id, CHANNEL, &author, "dance", json!([]), "0"),
        ),
        8 => (
            "SOMETHING_DISCORD_MAY_ADD",
            json!({"x": [1, 2, {"y": null}]}),
        ),
        9 => ("MESSAGE_CREATE", json!("not an object")),
        10 => ("INTERACTION_CREATE", with(post(), "type", json!("three"))),
        _ => ("MESSAGE_CREATE", json!({"id": id, "channel_id": CHANNEL})),
    }
}

/// Sends `count` malformed events (from the `first`-th kind on), then
/// `count` posts of hostile attachments (decompression bombs, sizes and
/// types that lie, truncated files, archives, a server that drips its bytes
/// past the timeout, files declared too large, links off Discord's CDN),
/// and waits for the posts' replies: (posts unanswered, replies that are
/// poems, replies that are refusals in words).
async fn hostile_round(discord: &FakeDiscord, first: usize, count: usize) -> (usize, usize, usize) {
    for i in first..first + count {
        let (kind, data) = malformed_event(i);
        discord.send(kind, data);
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let hostile = [
        ("bomb.png", 4096, "image/png"),
        ("liar-size.png", 1024, "image/png"),
        ("liar-type.png", 40, "image/png"),
        ("truncated.png", 2000, "image/png"),
        ("archive.jpg", 1000, "image/jpeg"),
        ("slow.png", 100_000, "image/png"),
        ("huge.png", 30 << 20, "image/png"),
        ("cat.png", 100, "image/png"),
    ];
    let mut posts = Vec::new();
    for i in first..first + count {
        let (name, size, kind) = hostile[i % hostile.len()];
        // cat.png from another host: not Discord's CDN.
        let host = if name == "cat.png" {
            "evil.example.com"
        } else {
            "cdn.discordapp.com"
        };
        let id = format!("{}", 100_000 + i);
        let post = message_from(
            &id,
            &format!("{}", 400 + i % 40),
            &format!("{}", 200_000 + i),
            "<@100>",
            true,
            json!([attachment(name, host, size, kind)]),
        );
        discord.send("MESSAGE_CREATE", post);
        posts.push(id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reply_to = |seen: &[Seen], id: &str| -> Option<usize> {
        seen.iter().position(|s| {
            s.method == "POST"
                && s.path.ends_with("/messages")
                && s.body["message_reference"]["message_id"] == id
        })
    };
    let seen = discord
        .collect(Duration::from_secs(240), |seen| {
            seen.len() >= count && posts.iter().all(|id| reply_to(seen, id).is_some())
        })
        .await;
    let replies: Vec<&Seen> = posts
        .iter()
        .filter_map(|id| Some(&seen[reply_to(&seen, id)?]))
        .collect();
    let poems = replies.iter().filter(|s| is_poem(s)).count();
    let worded = replies
        .iter()
        .filter(|s| s.text().starts_with("写不成诗："))
        .count();
    (posts.len() - replies.len(), poems, worded)
}

fn is_poem(s: &Seen) -> bool {
    s.body["embeds"][0]["title"]
        .as_str()
        .is_some_and(|t| t.starts_with("影诗"))
}

/// 1,000 malformed or truncated gateway events and 1,000 posts of hostile
/// attachments ([`hostile_round`]): every post gets a refusal in words and
/// none a poem, the bot answers an honest `/poem` right after, its resident
/// memory stays within 10 % of what it was, and nothing panics. "Before" is
/// the bot after a first round of 100 of each, which pays once for what the
/// first of each kind allocates (threads' heaps, connections' buffers); a
/// cold start grows about 15 % over the first round and then stays flat.
/// The figures print for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_events_and_attachments_leave_the_bot_answering() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let _alone = ONE_AT_A_TIME.lock().await;
    let default_hook = Arc::new(std::panic::take_hook());
    let chained = default_hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        chained(info)
    }));
    let discord = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    start_bot_with(
        &discord,
        &dir.path().join("state.json"),
        dir.path(),
        &[
            ("YINGSHI_MODELS__POET_DIR", "tests/fixtures/t5-tiny"),
            ("YINGSHI_POEM__FORM", "五绝"),
            ("YINGSHI_PHOTO__MAX_BYTES", "1048576"),
            ("YINGSHI_DOWNLOAD__TOTAL_TIMEOUT_SECS", "1"),
        ],
    );
    discord.expect("PUT", "/applications/100/commands").await;
    let honest = |id: &str| {
        let options = json!([{"name": "keywords", "type": 3, "value": "春风 明月"}]);
        slash_from(id, CHANNEL, "42", "poem", options, "0")
    };
    discord.send("INTERACTION_CREATE", honest("780"));
    assert!(is_poem(
        &discord.expect("POST", "/webhooks/100/tok780").await
    ));
    let rss_cold = rss_kib();
    assert_eq!(hostile_round(&discord, 0, 100).await, (0, 0, 100));
    let rss_before = rss_kib();

    let start = std::time::Instant::now();
    let (unanswered, poems, worded) = hostile_round(&discord, 100, 1000).await;
    let elapsed = start.elapsed();
    discord.send("INTERACTION_CREATE", honest("781"));
    let after = discord.until("POST", "/webhooks/100/tok781").await;
    let answered_after = is_poem(after.last().unwrap());
    let rss_after = rss_kib();
    let panics = PANICS.load(Ordering::SeqCst);
    std::panic::set_hook(Box::new(move |info| default_hook(info)));
    eprintln!(
        "hostile: 1,000 malformed events and 1,000 hostile attachments in {:.1} s; \
         {unanswered} posts unanswered, {poems} poems, {worded} refusals in words; \
         RSS {rss_cold} (cold) → {rss_before} (after 100 of each) → {rss_after} kB; \
         {panics} panics; /poem after: {answered_after}",
        elapsed.as_secs_f64()
    );
    assert_eq!((unanswered, poems, worded), (0, 0, 1000));
    assert!(answered_after, "{after:?}");
    assert!(
        rss_after as f64 <= rss_before as f64 * 1.10,
        "RSS {rss_before} → {rss_after} kB"
    );
    assert_eq!(panics, 0);
}

/// Discord's rate limits as production meets them: the bot reaches the fake
/// over TLS with serenity's rate limiter on, and a burst of 500 posts across
/// ten channels (each a file that is no photo, so each gets a quick refusal)
/// meets the [`Storm`]: per-route and global 429s. Every reply is delivered
/// once, each channel's in the order first tried, and the bot sends nothing
/// past what the headers allow. The figures print for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_loses_repeats_and_reorders_no_reply() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let storm = Arc::new(Storm::default());
    let (discord, client) = FakeDiscord::start_tls(storm.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    start_bot_on(
        None,
        Some(client),
        &dir.path().join("state.json"),
        dir.path(),
        &[("YINGSHI_LIMITS__CHANNEL_PER_MINUTE", "1000")],
    );
    discord.expect("PUT", "/applications/100/commands").await;
    let start = std::time::Instant::now();
    let mut posts = Vec::new();
    for i in 0..500 {
        let (id, channel) = (format!("{}", 300_000 + i), format!("{}", 500 + i % 10));
        let notes = attachment("notes.txt", "cdn.discordapp.com", 10, "text/plain");
        let post = message_from(
            &id,
            &channel,
            &format!("{}", 400_000 + i),
            "<@100>",
            true,
            json!([notes]),
        );
        discord.send("MESSAGE_CREATE", post);
        posts.push((channel, id));
    }
    while storm.state.lock().unwrap().delivered.len() < posts.len()
        && start.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late repeats would show here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = storm.state.lock().unwrap();
    let lost = posts.iter().filter(|p| !s.delivered.contains(p)).count();
    let repeated = s.delivered.len() - posts.iter().filter(|p| s.delivered.contains(p)).count();
    let reordered = (500..510)
        .map(|c| c.to_string())
        .filter(|c| {
            let order = |v: &[(String, String)]| {
                v.iter().filter(|p| &p.0 == c).cloned().collect::<Vec<_>>()
            };
            order(&s.delivered) != order(&s.first_tried)
        })
        .count();
    let limited = s.route_429s + s.global_429s + s.exceeded_route + s.exceeded_global;
    eprintln!(
        "429 storm: {} replies in {:.1} s; {limited} responses rate-limited ({} per route, {} global, \
         {} for sending into an empty bucket, {} for sending during a global 429); \
         {lost} lost, {repeated} repeated, {reordered} channels out of order",
        s.delivered.len(),
        start.elapsed().as_secs_f64(),
        s.route_429s,
        s.global_429s,
        s.exceeded_route,
        s.exceeded_global,
    );
    assert!(limited >= 200, "{limited} rate-limited");
    assert_eq!((lost, repeated, reordered), (0, 0, 0));
    assert_eq!(
        (s.exceeded_route, s.exceeded_global),
        (0, 0),
        "replies sent into a bucket the headers said was empty, and during a global 429"
    );
}
