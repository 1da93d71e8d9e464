//! Metrics in the Prometheus text format, and the small HTTP server that
//! serves them (`GET /metrics`), for shard nodes and the coordinator.
//!
//! Counters and histograms are atomics updated where things happen; gauges
//! (transactions in flight, replication lag, ...) are read from the state
//! they describe when the endpoint is scraped. Each server instance has its
//! own metrics, so the nodes of an in-process cluster do not mix.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A monotonically increasing count.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency buckets (seconds): 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Size buckets (items per batch).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum, in millionths of the unit.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }

    pub fn sizes() -> Histogram {
        Histogram::new(SIZE_BUCKETS)
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() && value > 0.0 { value } else { 0.0 };
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::latency()
    }
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Builds a text exposition, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels, extra: Option<(&str, &str)>, value: f64) {
        self.out.push_str(name);
        let all: Vec<(&str, &str)> = labels.iter().copied().chain(extra).collect();
        if !all.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in all.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A counter family with one sample per label set.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) -> &mut Self {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.sample(name, labels, None, *value as f64);
        }
        self
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) -> &mut Self {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, None, *value);
        }
        self
    }

    /// A histogram family with one histogram per label set.
    pub fn histogram(&mut self, name: &str, help: &str, histograms: &[(Labels, &Histogram)]) -> &mut Self {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (labels, h) in histograms {
            let mut cumulative = 0;
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = h.bounds.get(i).map(|b| format_value(*b)).unwrap_or_else(|| "+Inf".into());
                self.sample(&bucket, labels, Some(("le", &le)), cumulative as f64);
            }
            self.sample(&format!("{name}_sum"), labels, None, h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
            self.sample(&format!("{name}_count"), labels, None, cumulative as f64);
        }
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// What the endpoint renders on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The largest request head the endpoint reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub fn serve(listener: TcpListener, render: Render, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let render = render.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, render)).await;
                    });
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// Binds `address` for [`serve`]; the error names the address.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

async fn answer(mut stream: TcpStream, render: Render) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "request head too large\n").await;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") | ("GET", "/") => {
            let body = render();
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "only /metrics is served here\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET is served here\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `http://address/metrics` (for tests and the chaos bench).
pub async fn scrape(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!("unexpected answer from {address}: {}", response.lines().next().unwrap_or_default()))),
    }
}

/// The value of one sample in an exposition: `name` with exactly `labels`
/// (in any order).
pub fn sample_value(text: &str, name: &str, labels: Labels) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let mut found: Vec<(String, String)> = Vec::new();
        for pair in split_labels(rest) {
            let (k, v) = pair.split_once('=')?;
            found.push((k.to_string(), v.trim_matches('"').to_string()));
        }
        let matches = found.len() == labels.len() && labels.iter().all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v));
        if !matches {
            return None;
        }
        match value {
            "+Inf" => Some(f64::INFINITY),
            v => v.parse().ok(),
        }
    })
}

fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_labels_and_cumulative_buckets() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(0.005);
        h.observe(0.05);
        h.observe(3.0);
        let mut out = Exposition::new();
        out.counter("t_total", "Things.", &[(&[("kind", "a\"b")], 7)]);
        out.gauge("t_gauge", "A level.", &[(&[], 1.5)]);
        out.histogram("t_seconds", "Latency.", &[(&[("protocol", "2pc")], &h)]);
        let text = out.finish();
        assert!(text.contains("# TYPE t_total counter\nt_total{kind=\"a\\\"b\"} 7\n"), "{text}");
        assert!(text.contains("t_gauge 1.5\n"), "{text}");
        assert_eq!(sample_value(&text, "t_seconds_bucket", &[("protocol", "2pc"), ("le", "0.01")]), Some(1.0));
        assert_eq!(sample_value(&text, "t_seconds_bucket", &[("protocol", "2pc"), ("le", "0.1")]), Some(2.0));
        assert_eq!(sample_value(&text, "t_seconds_bucket", &[("protocol", "2pc"), ("le", "+Inf")]), Some(3.0));
        assert_eq!(sample_value(&text, "t_seconds_count", &[("protocol", "2pc")]), Some(3.0));
        let sum = sample_value(&text, "t_seconds_sum", &[("protocol", "2pc")]).unwrap();
        assert!((sum - 3.055).abs() < 1e-6, "{sum}");
        assert_eq!(sample_value(&text, "t_total", &[("kind", "a\"b")]), None, "label values come back escaped");
        assert_eq!(sample_value(&text, "t_total", &[("kind", "a\\\"b")]), Some(7.0));
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_refuses_other_requests() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = watch::channel(false);
        let task = serve(listener, Arc::new(|| "up 1\n".to_string()), stopped);
        assert_eq!(scrape(&address).await.unwrap(), "up 1\n");
        let ask = |request: &'static str| {
            let address = address.clone();
            async move {
                let mut s = TcpStream::connect(&address).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.unwrap();
                answer.lines().next().unwrap_or_default().to_string()
            }
        };
        assert_eq!(ask("GET /other HTTP/1.1\r\n\r\n").await, "HTTP/1.1 404 Not Found");
        assert_eq!(ask("POST /metrics HTTP/1.1\r\n\r\n").await, "HTTP/1.1 405 Method Not Allowed");
        let huge: &'static str = Box::leak(format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_boxed_str());
        assert_eq!(ask(huge).await, "HTTP/1.1 431 Request Header Fields Too Large");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
