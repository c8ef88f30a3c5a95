//! Incremental HTTP/1.0 and HTTP/1.1 parser (one [`HttpParser`] per direction), for the `http` dissector.
//!
//! Mirrors what Haka's `modules/protocol/http` exposed: requests (`method`, `uri`, `version`, `headers`),
//! responses (`version`, `status`, `reason`, `headers`), streamed bodies, plus the `http.uri.split`,
//! `http.uri.normalize` and `http.cookies.split` helpers.
//!
//! Data may arrive in arbitrary chunks: [`HttpParser::feed`] buffers only an incomplete head, chunk-size line
//! or trailer block (bounded by [`Limits`]); body bytes are handed out as soon as they arrive. Heads keep their
//! raw bytes so that an unmodified message re-serialises byte for byte ([`Request::to_bytes`]).
//!
//! Parsing is tolerant as libhtp's (Suricata): what servers accept although it is irregular (raw
//! spaces in a request target, HTTP/0.9 request lines, bare LF, obs-fold, ...) is parsed and
//! flagged ([`Anomaly`], [`HeadInfo::anomalies`]); only what no server would read as the rules
//! do is an error.
//!
//! Errors are sticky: once `feed` returned an error, every later call returns it again (Haka raised
//! `protocol_error`, alerted and dropped the flow; the caller decides). No input makes the parser panic.
use std::collections::VecDeque;
use std::fmt;

/// Parse errors. After one, the parser is dead (every later call returns the same error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head (start line + headers), a trailer block or a chunk-size line exceeds the limit.
    HeadTooLong,
    /// More header (or trailer) fields than [`Limits::max_headers`].
    TooManyHeaders,
    BadRequestLine,
    /// A request line whose method and target are there but whose version is not
    /// `HTTP/d.d` (Haka's grammar named its `version` rule: "invalid http version").
    BadVersion,
    BadStatusLine,
    BadHeader,
    BadChunk,
    BadContentLength,
    /// A request whose Transfer-Encoding does not end with `chunked` (RFC 7230 §3.3.3: 400).
    BadTransferEncoding,
    /// Data after a message that closed the connection (`Connection: close`, HTTP/1.0 without keep-alive).
    /// Haka: "http: unexpected data from client/server".
    UnexpectedData,
    /// End of stream in the middle of a message ([`HttpParser::feed_eof`]).
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HttpError::HeadTooLong => "http head too long",
            HttpError::TooManyHeaders => "too many http headers",
            HttpError::BadRequestLine => "invalid http request line",
            HttpError::BadVersion => "invalid http version",
            HttpError::BadStatusLine => "invalid http status line",
            HttpError::BadHeader => "invalid http header",
            HttpError::BadChunk => "invalid http chunk",
            HttpError::BadContentLength => "invalid http content-length",
            HttpError::BadTransferEncoding => "invalid http transfer-encoding",
            HttpError::UnexpectedData => "unexpected http data after connection close",
            HttpError::Truncated => "truncated http message",
        };
        f.write_str(s)
    }
}

impl std::error::Error for HttpError {}

impl HttpError {
    /// The alert Haka raised for it: its HTTP grammar named the rule that failed
    /// ("invalid http request_line"); `from_server`: the error is in the responses.
    pub fn haka_alert(self, from_server: bool) -> String {
        let rule = match self {
            HttpError::BadRequestLine => "request_line",
            HttpError::BadVersion => "version",
            HttpError::BadStatusLine => "response_line",
            HttpError::BadHeader | HttpError::TooManyHeaders | HttpError::HeadTooLong => "header",
            HttpError::UnexpectedData => {
                return format!("http: unexpected data from {}", if from_server { "server" } else { "client" })
            }
            other => return format!("invalid http: {other}"),
        };
        format!("invalid http {rule}")
    }
}

/// Parser limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of a head (start line + headers + empty line), also of a trailer block.
    pub max_head: usize,
    /// Maximum number of header fields (also of trailer fields).
    pub max_headers: usize,
    /// Maximum length of a chunk-size line (size + extensions).
    pub max_chunk_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 64 * 1024, max_headers: 256, max_chunk_line: 4096 }
    }
}

/// An irregularity the parser tolerates, as libhtp (Suricata) does: the message is parsed
/// and handed to the rules, and flagged ([`HeadInfo::anomalies`], bit `1 << kind`). What no
/// endpoint could parse, or what endpoints would parse differently in a way that changes
/// the framing (request smuggling), stays an [`HttpError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Space or HTAB inside the request target (`GET /a b HTTP/1.1`).
    RequestTargetSpaces,
    /// A request line without a version (`GET /x`, HTTP/0.9): the head is that line alone.
    Http09Request,
    /// A version not all in upper case (`http/1.1`).
    LowercaseVersion,
    /// Separators other than one SP in the request line (HTAB, repeated blanks, blanks
    /// before the method or after the version).
    RequestLineWhitespace,
    /// A control byte other than HTAB, NUL and CR in the request target.
    RequestTargetControl,
    /// A field continued on an obs-fold line.
    ObsFold,
    /// A line ended by LF alone.
    BareLf,
    /// Content-Length repeated with the same value (`2, 2`, or two fields).
    DuplicateContentLength,
    /// White space between a field name and its colon (`Host : x`).
    SpaceBeforeColon,
}

impl Anomaly {
    pub const COUNT: usize = 9;
    pub const ALL: [Anomaly; Anomaly::COUNT] = [
        Anomaly::RequestTargetSpaces,
        Anomaly::Http09Request,
        Anomaly::LowercaseVersion,
        Anomaly::RequestLineWhitespace,
        Anomaly::RequestTargetControl,
        Anomaly::ObsFold,
        Anomaly::BareLf,
        Anomaly::DuplicateContentLength,
        Anomaly::SpaceBeforeColon,
    ];

    /// Its bit in [`HeadInfo::anomalies`].
    pub const fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The name rules and alerts see.
    pub fn name(self) -> &'static str {
        match self {
            Anomaly::RequestTargetSpaces => "request_target_spaces",
            Anomaly::Http09Request => "http09_request",
            Anomaly::LowercaseVersion => "lowercase_version",
            Anomaly::RequestLineWhitespace => "request_line_whitespace",
            Anomaly::RequestTargetControl => "request_target_control",
            Anomaly::ObsFold => "obs_fold",
            Anomaly::BareLf => "bare_lf",
            Anomaly::DuplicateContentLength => "duplicate_content_length",
            Anomaly::SpaceBeforeColon => "space_before_colon",
        }
    }

    /// The kinds set in `bits`, in order.
    pub fn of(bits: u16) -> impl Iterator<Item = Anomaly> {
        Anomaly::ALL.into_iter().filter(move |a| bits & a.bit() != 0)
    }
}

/// One header field. `raw` holds the original line(s) (with line terminators) while unmodified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
    raw: Option<Vec<u8>>,
}

/// Header fields in order, original case kept; lookups are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<Field>,
    /// The terminating empty line as received (`\r\n` or `\n`).
    end: Vec<u8>,
}

impl Default for Headers {
    fn default() -> Self {
        Headers { fields: Vec::new(), end: b"\r\n".to_vec() }
    }
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str())
    }

    /// All values of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value.as_str()).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `(name, value)` pairs in order, names in their original case.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|f| (f.name.as_str(), f.value.as_str()))
    }

    /// Replaces every `name` field by one `name: value` (at the position of the first one, keeping that
    /// field's name spelling; else appended).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter().position(|f| f.name.eq_ignore_ascii_case(name)) {
            Some(i) => {
                let f = &mut self.fields[i];
                f.value = value.to_string();
                f.raw = None;
                let mut j = 0;
                self.fields.retain(|f| {
                    let keep = j <= i || !f.name.eq_ignore_ascii_case(name);
                    j += 1;
                    keep
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every `name` field (Haka: `headers[name] = nil`). Returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
        before - self.fields.len()
    }

    /// Appends `name: value`.
    pub fn add(&mut self, name: &str, value: &str) {
        self.fields.push(Field { name: name.to_string(), value: value.to_string(), raw: None });
    }

    /// The header block (fields + terminating empty line); byte-identical to the input when unmodified.
    /// Modified or added fields are written as `name: value\r\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            match &f.raw {
                Some(r) => out.extend_from_slice(r),
                None => {
                    out.extend_from_slice(f.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(&sanitize(&f.value));
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        out.extend_from_slice(&self.end);
    }

    /// True if the comma-separated list header `name` contains `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// CR/LF in a value set by the caller would inject headers: replace them by spaces.
fn sanitize(s: &str) -> Vec<u8> {
    s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect()
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    /// As received, e.g. `HTTP/1.1`; empty for an HTTP/0.9 request line (`GET /x`).
    pub version: String,
    pub headers: Headers,
    raw_line: Vec<u8>,
    orig: (String, String, String),
}

impl Request {
    /// A new request (no raw bytes: serialised as `method uri version\r\n`).
    pub fn new(method: &str, uri: &str, version: &str) -> Self {
        Request {
            method: method.into(),
            uri: uri.into(),
            version: version.into(),
            headers: Headers::new(),
            raw_line: Vec::new(),
            orig: (String::new(), String::new(), String::new()),
        }
    }

    /// The head; byte-identical to the input when unmodified (including empty lines that preceded the start
    /// line, RFC 7230 §3.5).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.raw_line.is_empty()
            && (&self.method, &self.uri, &self.version) == (&self.orig.0, &self.orig.1, &self.orig.2)
        {
            out.extend_from_slice(&self.raw_line);
        } else {
            let line = if self.version.is_empty() {
                format!("{} {}", self.method, self.uri) // HTTP/0.9: no version
            } else {
                format!("{} {} {}", self.method, self.uri, self.version)
            };
            out.extend_from_slice(&sanitize(&line));
            out.extend_from_slice(b"\r\n");
        }
        self.headers.write_to(&mut out);
        out
    }

    /// `split_uri(&self.uri)` (Haka: `request:split_uri()`).
    pub fn split_uri(&self) -> UriParts {
        split_uri(&self.uri)
    }

    /// Cookies of every `Cookie` header.
    pub fn split_cookies(&self) -> Vec<(String, String)> {
        self.headers.get_all("Cookie").iter().flat_map(|v| split_cookies(v)).collect()
    }

    /// Whether the connection stays open after this message.
    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.version, &self.headers)
    }
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    raw_line: Vec<u8>,
    orig: (String, u16, String),
}

impl Response {
    pub fn new(version: &str, status: u16, reason: &str) -> Self {
        Response {
            version: version.into(),
            status,
            reason: reason.into(),
            headers: Headers::new(),
            raw_line: Vec::new(),
            orig: (String::new(), 0, String::new()),
        }
    }

    /// The head; byte-identical to the input when unmodified (including empty lines that preceded the start
    /// line, RFC 7230 §3.5).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.raw_line.is_empty()
            && (&self.version, self.status, &self.reason) == (&self.orig.0, self.orig.1, &self.orig.2)
        {
            out.extend_from_slice(&self.raw_line);
        } else {
            out.extend_from_slice(&sanitize(&format!("{} {:03} {}", self.version, self.status, self.reason)));
            out.extend_from_slice(b"\r\n");
        }
        self.headers.write_to(&mut out);
        out
    }

    /// Cookies of every `Set-Cookie` header (attributes included, as Haka's `split_cookies`).
    pub fn split_cookies(&self) -> Vec<(String, String)> {
        self.headers.get_all("Set-Cookie").iter().flat_map(|v| split_cookies(v)).collect()
    }

    pub fn keep_alive(&self) -> bool {
        keep_alive(&self.version, &self.headers)
    }
}

fn keep_alive(version: &str, h: &Headers) -> bool {
    if h.has_token("Connection", "close") {
        return false;
    }
    if version.eq_ignore_ascii_case("HTTP/1.0") {
        return h.has_token("Connection", "keep-alive");
    }
    true
}

/// What [`HttpParser::feed`] reports, in stream order. Per message: one `Request`/`Response`, zero or more
/// `Body`, optionally `Trailers` (chunked only), then `MessageEnd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    // (boxed: the datapath reports `Head`s, and a small enum is cheap to move)
    Request(Box<Request>),
    Response(Box<Response>),
    /// A request or response head as received, with where its parts are: reported instead
    /// of `Request`/`Response` when [`HttpParser::set_raw_heads`] is on (no per-field
    /// allocation; the engine's datapath hands the bytes to Lua as they are).
    Head(RawHead),
    /// Body bytes (de-chunked).
    Body(Vec<u8>),
    /// Trailer fields of a chunked body (only when there are some).
    Trailers(Headers),
    MessageEnd,
    /// Raw bytes after a successful CONNECT or a `101 Switching Protocols` (not HTTP any more; Haka passed
    /// them through unparsed).
    Tunnel(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a head; `line_start` is the offset (from `pos`) of the first unscanned line.
    Head {
        line_start: usize,
    },
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf,
    Trailers {
        line_start: usize,
    },
    UntilClose,
    /// The message said the connection closes: nothing more may come.
    Closed,
    Tunnel,
    /// Stream ended ([`HttpParser::feed_eof`]).
    Done,
}

/// Incremental parser for one direction of an HTTP connection.
#[derive(Debug, Clone)]
pub struct HttpParser {
    kind: Kind,
    limits: Limits,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    failed: Option<HttpError>,
    /// Response side: request methods not yet answered, oldest first.
    methods: VecDeque<Method>,
    /// Report heads as [`HttpEvent::Head`] rather than parsed `Request`/`Response`.
    raw_heads: bool,
    /// Whether the current message keeps the connection open.
    keep: bool,
    /// After the current message, switch to tunnel mode.
    tunnel_after: bool,
    /// Head/trailer scanning: bytes (from `pos`) already searched for a line end, so that a long line fed
    /// byte by byte is not rescanned from its start each time.
    scanned: usize,
    /// Request side: the first line of the head being received was complete and had a
    /// version (no `\n` before `scanned` otherwise): not looked at again.
    line_checked: bool,
    /// Empty lines received before the next start line.
    leading: Vec<u8>,
    /// Stream offset of `buf[0]` (bytes of the stream compacted away so far).
    base: u64,
    /// Stream offsets `[start, end)` of the heads parsed and not yet taken (see `take_head_span`).
    spans: VecDeque<(u64, u64)>,
    /// Report body bytes (`Body`/`Tunnel` events); off when nobody reads them.
    emit_bodies: bool,
    /// Request side: an HTTP/0.9 request line (no version) is an error
    /// ([`HttpError::BadRequestLine`], Haka's behaviour) rather than a flagged head.
    refuse_http09: bool,
    /// A head cut by the end of its stream is a parse error naming where it was cut (Haka's
    /// grammar failed there: "invalid http header"), rather than [`HttpError::Truncated`].
    truncated_head_error: bool,
    /// A NUL in a field value is part of the value (`[http] binary_header = "accept"`,
    /// Haka's grammar) rather than [`HttpError::BadHeader`].
    nul_in_values: bool,
    /// Stream offsets of the `Body`/`Tunnel` events reported and not yet taken.
    body_offs: VecDeque<u64>,
    /// Raw-heads mode: the stream offset of the end of each message reported (after its
    /// body's framing: a chunked body's last chunk and trailers), not yet taken.
    msg_ends: VecDeque<u64>,
    /// The buffer of a head handed back by the caller ([`recycle_head`](Self::recycle_head)),
    /// reused for the next head (held inline: no list to reach through).
    spare_head: Vec<u8>,
}
/// A parser reset for another connection keeps an input buffer up to this capacity.
const RESET_BUF_CAPACITY: usize = 16 * 1024;

impl HttpParser {
    fn new(kind: Kind, limits: Limits) -> Self {
        HttpParser {
            kind,
            limits,
            state: State::Head { line_start: 0 },
            buf: Vec::new(),
            pos: 0,
            failed: None,
            methods: VecDeque::new(),
            raw_heads: false,
            keep: true,
            tunnel_after: false,
            scanned: 0,
            line_checked: false,
            leading: Vec::new(),
            base: 0,
            spans: VecDeque::new(),
            emit_bodies: true,
            refuse_http09: false,
            truncated_head_error: false,
            nul_in_values: false,
            body_offs: VecDeque::new(),
            msg_ends: VecDeque::new(),
            spare_head: Vec::new(),
        }
    }

    /// Back to the state of a new parser (same kind, limits and options) for another
    /// connection, keeping the memory of its buffers.
    pub fn reset(&mut self) {
        self.state = State::Head { line_start: 0 };
        if self.buf.capacity() > RESET_BUF_CAPACITY {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.pos = 0;
        self.failed = None;
        self.methods.clear();
        self.keep = true;
        self.tunnel_after = false;
        self.scanned = 0;
        self.line_checked = false;
        self.leading.clear();
        self.base = 0;
        self.spans.clear();
        self.body_offs.clear();
        self.msg_ends.clear();
    }

    /// Gives back the bytes of a head this parser reported (once the caller is done with
    /// it): the next head is built in them rather than in a new allocation.
    pub fn recycle_head(&mut self, bytes: Vec<u8>) {
        if self.spare_head.capacity() == 0 && bytes.capacity() <= self.limits.max_head {
            self.spare_head = bytes;
        }
    }

    /// Stream offset of the first byte of the oldest `Body`/`Tunnel` event reported by
    /// `feed` and not yet taken, in event order (to edit body bytes in place).
    pub fn take_body_offset(&mut self) -> Option<u64> {
        self.body_offs.pop_front()
    }

    /// Stream offset of the end of the oldest `MessageEnd` reported by `feed` and not yet
    /// taken (raw-heads mode): after the body and its framing.
    pub fn take_message_end(&mut self) -> Option<u64> {
        self.msg_ends.pop_front()
    }

    /// Kept in raw-heads mode only, whose caller (the dissector) takes them after each
    /// `feed`: one per event reported, however many one segment holds (a cap lost the
    /// first ones, misplacing every later offset; elsewhere nobody takes them).
    fn body_at(&mut self, off: u64) {
        if self.raw_heads {
            self.body_offs.push_back(off);
        }
    }

    /// Whether `feed` reports body bytes (default true). Without them bodies are
    /// still delimited (messages, keep-alive, chunking) but never copied.
    pub fn set_emit_bodies(&mut self, on: bool) {
        self.emit_bodies = on;
    }

    /// Whether an HTTP/0.9 request line (`GET /x`, no version) is an error
    /// ([`HttpError::BadRequestLine`], as Haka) rather than a head flagged
    /// [`Anomaly::Http09Request`] (default). Kept by [`reset`](Self::reset).
    pub fn set_refuse_http09(&mut self, on: bool) {
        self.refuse_http09 = on;
    }

    /// Whether a head cut by the end of its stream ([`feed_eof`](Self::feed_eof)) is the
    /// error of the part that was cut ([`HttpError::BadHeader`] once the start line is
    /// complete, else the start line's), as Haka's grammar reported it, rather than
    /// [`HttpError::Truncated`] (default). Kept by [`reset`](Self::reset).
    pub fn set_truncated_head_error(&mut self, on: bool) {
        self.truncated_head_error = on;
    }

    /// NUL bytes in field values are accepted as part of the value (Haka's behaviour)
    /// instead of being a protocol error.
    pub fn set_nul_in_values(&mut self, on: bool) {
        self.nul_in_values = on;
    }

    /// Stream offsets `[start, end)` of the oldest head (request or status line with its
    /// fields, leading empty lines included) reported by `feed` and not yet taken, in event
    /// order. Used to rewrite a modified head in place in the stream.
    pub fn take_head_span(&mut self) -> Option<(u64, u64)> {
        self.spans.pop_front()
    }

    /// Parser for the client-to-server direction.
    pub fn request() -> Self {
        Self::new(Kind::Request, Limits::default())
    }

    /// Parser for the server-to-client direction.
    pub fn response() -> Self {
        Self::new(Kind::Response, Limits::default())
    }

    pub fn request_with_limits(limits: Limits) -> Self {
        Self::new(Kind::Request, limits)
    }

    pub fn response_with_limits(limits: Limits) -> Self {
        Self::new(Kind::Response, limits)
    }

    /// Response side: the next unanswered request had this method (HEAD and CONNECT change how the response
    /// body is delimited). Call once per request, in order; without it, responses are parsed as answers to GET.
    pub fn expect_response_to(&mut self, method: &str) {
        self.expect_response_to_method(method.as_bytes());
    }

    /// [`expect_response_to`](Self::expect_response_to) with the method's bytes.
    pub fn expect_response_to_method(&mut self, method: &[u8]) {
        if self.methods.len() >= 4096 {
            self.methods.pop_front();
        }
        self.methods.push_back(Method::of(method));
    }

    /// Response side: the next unanswered request was an HTTP/0.9 one (no version): its
    /// answer is read as a body until the connection closes unless it starts with `HTTP/`.
    pub fn expect_http09_response(&mut self) {
        if self.methods.len() >= 4096 {
            self.methods.pop_front();
        }
        self.methods.push_back(Method::Http09);
    }

    /// Whether heads are reported as [`HttpEvent::Head`] (default false: parsed
    /// [`Request`]/[`Response`] with owned fields).
    pub fn set_raw_heads(&mut self, on: bool) {
        self.raw_heads = on;
    }

    /// Bytes buffered, waiting for the end of a head / chunk line / trailer block.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Heap memory held: the input buffer's allocation, the spare head buffer and the
    /// pipelining queues (the flow memory budget).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
            + self.spare_head.capacity()
            + self.methods.capacity() * std::mem::size_of::<Method>()
            + self.body_offs.capacity() * 8
            + self.msg_ends.capacity() * 8
    }

    /// True between messages (nothing partial buffered, no body in progress).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head { .. } | State::Closed | State::Done) && self.buffered() == 0
    }

    /// Parses `data` (any chunk of the stream); returns the events it completed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<HttpEvent>, HttpError> {
        let mut out = Vec::new();
        self.feed_into(data, &mut out)?;
        Ok(out)
    }

    /// [`feed`](Self::feed) appending the events to `out` (a vector the caller reuses:
    /// no allocation per call). On error, `out` may hold the events completed before it.
    pub fn feed_into(&mut self, data: &[u8], out: &mut Vec<HttpEvent>) -> Result<(), HttpError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.state == State::Done {
            if data.is_empty() {
                return Ok(());
            }
            return self.fail(HttpError::UnexpectedData);
        }
        let mut data = data;
        // Fast path: body bytes with nothing buffered are taken straight from `data`
        // (no copy into the parser's buffer; none at all when bodies are not reported).
        while self.buf.is_empty() && !data.is_empty() {
            match self.state {
                State::Fixed(rem) | State::ChunkData(rem) => {
                    let n = (data.len() as u64).min(rem) as usize;
                    if self.emit_bodies {
                        out.push(HttpEvent::Body(data[..n].to_vec()));
                        self.body_at(self.base);
                    }
                    self.base += n as u64;
                    data = &data[n..];
                    let rem = rem - n as u64;
                    match self.state {
                        State::Fixed(_) if rem == 0 => self.end_message(out),
                        State::Fixed(_) => self.state = State::Fixed(rem),
                        _ => self.state = if rem == 0 { State::ChunkCrlf } else { State::ChunkData(rem) },
                    }
                }
                State::UntilClose | State::Tunnel => {
                    if self.emit_bodies {
                        let d = data.to_vec();
                        out.push(if self.state == State::Tunnel { HttpEvent::Tunnel(d) } else { HttpEvent::Body(d) });
                        self.body_at(self.base);
                    }
                    self.base += data.len() as u64;
                    data = &[];
                }
                _ => break,
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let r = if self.buf.is_empty() {
            // Parsed straight from `data`: only an incomplete tail (a head, chunk line or
            // trailer block continued by the next segment) is copied into the buffer.
            self.pos = 0;
            let r = self.run(data, out);
            let used = self.pos.min(data.len());
            self.base += used as u64;
            self.pos = 0;
            if r.is_ok() {
                self.buf.extend_from_slice(&data[used..]);
            }
            r
        } else {
            self.buf.extend_from_slice(data);
            let buf = std::mem::take(&mut self.buf);
            let r = self.run(&buf, out);
            self.buf = buf;
            // Compact: drop consumed bytes.
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.base += self.pos as u64;
                self.pos = 0;
            }
            r
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// End of the stream: completes a read-until-close body. Errors if a message is incomplete.
    pub fn feed_eof(&mut self) -> Result<Vec<HttpEvent>, HttpError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut out = Vec::new();
        match self.state {
            State::UntilClose => out.push(HttpEvent::MessageEnd),
            State::Head { .. } => {
                let rest = &self.buf[self.pos..];
                if let Some(start) = rest.iter().position(|&b| b != b'\r' && b != b'\n') {
                    if !self.truncated_head_error {
                        return self.fail(HttpError::Truncated);
                    }
                    let e = if memchr::memchr(b'\n', &rest[start..]).is_some() {
                        HttpError::BadHeader
                    } else if self.kind == Kind::Request {
                        HttpError::BadRequestLine
                    } else {
                        HttpError::BadStatusLine
                    };
                    return self.fail(e);
                }
            }
            State::Closed | State::Tunnel | State::Done => {}
            _ => return self.fail(HttpError::Truncated),
        }
        self.state = State::Done;
        self.buf.clear();
        self.pos = 0;
        Ok(out)
    }

    fn fail<T>(&mut self, e: HttpError) -> Result<T, HttpError> {
        self.failed = Some(e);
        self.buf = Vec::new();
        self.pos = 0;
        Err(e)
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<HttpEvent>) -> Result<(), HttpError> {
        loop {
            let progressed = match self.state {
                State::Head { line_start } => self.step_head(input, line_start, out)?,
                State::Fixed(rem) => {
                    let n = (input[self.pos..].len() as u64).min(rem) as usize;
                    if n > 0 {
                        if self.emit_bodies {
                            out.push(HttpEvent::Body(input[self.pos..][..n].to_vec()));
                            self.body_at(self.base + self.pos as u64);
                        }
                        self.pos += n;
                    }
                    let rem = rem - n as u64;
                    if rem == 0 {
                        self.end_message(out);
                        true
                    } else {
                        self.state = State::Fixed(rem);
                        false
                    }
                }
                State::ChunkSize => self.step_chunk_size(input)?,
                State::ChunkData(rem) => {
                    let n = (input[self.pos..].len() as u64).min(rem) as usize;
                    if n > 0 {
                        if self.emit_bodies {
                            out.push(HttpEvent::Body(input[self.pos..][..n].to_vec()));
                            self.body_at(self.base + self.pos as u64);
                        }
                        self.pos += n;
                    }
                    let rem = rem - n as u64;
                    self.state = if rem == 0 { State::ChunkCrlf } else { State::ChunkData(rem) };
                    rem == 0
                }
                State::ChunkCrlf => match input[self.pos..] {
                    [] | [b'\r'] => false,
                    [b'\n', ..] => {
                        self.pos += 1;
                        self.state = State::ChunkSize;
                        true
                    }
                    [b'\r', b'\n', ..] => {
                        self.pos += 2;
                        self.state = State::ChunkSize;
                        true
                    }
                    _ => return Err(HttpError::BadChunk),
                },
                State::Trailers { line_start } => self.step_trailers(input, line_start, out)?,
                State::UntilClose | State::Tunnel => {
                    if !input[self.pos..].is_empty() {
                        if self.emit_bodies {
                            let d = input[self.pos..].to_vec();
                            out.push(if self.state == State::Tunnel { HttpEvent::Tunnel(d) } else { HttpEvent::Body(d) });
                            self.body_at(self.base + self.pos as u64);
                        }
                        self.pos = input.len();
                    }
                    false
                }
                State::Closed => {
                    // Tolerate stray line terminators after the last message.
                    if input[self.pos..].iter().any(|&b| b != b'\r' && b != b'\n') {
                        return Err(HttpError::UnexpectedData);
                    }
                    self.pos = input.len();
                    false
                }
                State::Done => false,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Looks from `line_start` for the empty line ending a block. Returns the end offset (from
    /// `pos`, past the empty line), or None until more bytes arrive (`scanned` remembers how
    /// far the search went).
    fn scan_block(&mut self, input: &[u8], line_start: usize, limit: usize) -> Result<Option<usize>, HttpError> {
        let a = &input[self.pos..];
        let first = &a[line_start.min(a.len())..];
        let end = if first.starts_with(b"\n") {
            Some(line_start + 1)
        } else if first.starts_with(b"\r\n") {
            Some(line_start + 2)
        } else {
            let from = line_start.max(self.scanned).min(a.len());
            block_end(&a[from..]).map(|e| from + e)
        };
        match end {
            Some(end) if end > limit => Err(HttpError::HeadTooLong),
            Some(end) => {
                self.scanned = 0;
                Ok(Some(end))
            }
            None if a.len() > limit => Err(HttpError::HeadTooLong),
            None => {
                // an end split between segments: its "\n" may be one of the last two bytes
                self.scanned = a.len().saturating_sub(2).max(line_start);
                Ok(None)
            }
        }
    }

    fn step_head(&mut self, input: &[u8], line_start: usize, out: &mut Vec<HttpEvent>) -> Result<bool, HttpError> {
        if self.kind == Kind::Response
            && line_start == 0
            && self.leading.is_empty()
            && self.methods.front() == Some(&Method::Http09)
        {
            // The answer to an HTTP/0.9 request has no status line: unless it starts like
            // one (a server refusing HTTP/0.9 answers 400 with a status line), its bytes are
            // a body until the connection closes.
            let a = &input[self.pos..];
            let n = a.len().min(5);
            if a[..n] != b"HTTP/"[..n] {
                self.methods.pop_front();
                (self.keep, self.tunnel_after) = (false, false);
                self.state = State::UntilClose;
                return Ok(true);
            }
            if n < 5 {
                return Ok(false);
            }
        }
        if line_start == 0 {
            // RFC 7230 §3.5: ignore empty lines before a request line (also after a body's CRLF).
            // They are kept in front of the start line's raw bytes, so that `to_bytes` stays byte-identical.
            let skip = input[self.pos..].iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if self.leading.len() + skip > self.limits.max_head {
                return Err(HttpError::HeadTooLong);
            }
            self.leading.extend_from_slice(&input[self.pos..self.pos + skip]);
            self.pos += skip;
            if input[self.pos..].is_empty() {
                return Ok(false);
            }
        }
        if line_start == 0 {
            self.check_start(input)?;
        }
        let scanned = self.scanned;
        let mut end = match self.scan_block(input, line_start, self.limits.max_head) {
            Ok(Some(end)) => end,
            Ok(None) => match self.http09_line(input, scanned) {
                Some(end) => end,
                None => {
                    self.state = State::Head { line_start };
                    return Ok(false);
                }
            },
            // (a body may follow an HTTP/0.9 line at once)
            Err(e) => self.http09_line(input, scanned).ok_or(e)?,
        };
        self.line_checked = false;
        let lead = self.leading.len();
        let mut bytes = std::mem::take(&mut self.spare_head);
        bytes.clear();
        bytes.reserve(lead + end);
        bytes.extend_from_slice(&self.leading);
        bytes.extend_from_slice(&input[self.pos..self.pos + end]);
        let (info, framing) = scan_head(&bytes, lead, self.kind, self.limits.max_headers, self.nul_in_values)?;
        if self.refuse_http09 && info.anomalies & Anomaly::Http09Request.bit() != 0 {
            return Err(HttpError::BadRequestLine);
        }
        if info.anomalies & Anomaly::Http09Request.bit() != 0 && info.fields_start < bytes.len() {
            // an HTTP/0.9 request line is a head of its own: what came with it is body
            bytes.truncate(info.fields_start);
            end = info.fields_start - lead;
        }
        self.leading.clear();
        self.pos += end;
        let head_end = self.base + self.pos as u64;
        // (as body offsets: raw-heads mode only, one per head reported, no cap; a cap of 64
        // gave the heads after the 64th of one segment no span)
        if self.raw_heads {
            self.spans.push_back((head_end - bytes.len() as u64, head_end));
        }
        self.state = State::Head { line_start: 0 };
        let head = RawHead { bytes, info, is_request: self.kind == Kind::Request };
        let version = head.part(if head.is_request { 2 } else { 0 });
        self.keep = framing.keep_alive(version);
        let body = match self.kind {
            Kind::Request => {
                self.tunnel_after = Method::of(head.part(0)) == Method::Connect;
                if info.anomalies & Anomaly::Http09Request.bit() != 0 {
                    // what follows is not parsed (a server answers and closes): a body
                    // until close, that request_data rules still read
                    (self.keep, self.tunnel_after) = (false, false);
                    Body::UntilClose
                } else if self.tunnel_after {
                    Body::None
                } else {
                    framing.request_body()?
                }
            }
            Kind::Response => {
                let status = info.status;
                let interim = (100..200).contains(&status) && status != 101;
                let method = if interim { None } else { self.methods.pop_front() };
                let method = method.unwrap_or(Method::Other);
                self.tunnel_after = status == 101 || (method == Method::Connect && (200..300).contains(&status));
                if interim || self.tunnel_after || method == Method::Head || status == 204 || status == 304 {
                    if interim {
                        self.keep = true;
                    }
                    Body::None
                } else {
                    framing.response_body()?
                }
            }
        };
        if self.raw_heads {
            out.push(HttpEvent::Head(head));
        } else {
            out.push(head.parse(self.limits.max_headers, self.nul_in_values)?);
        }
        self.start_body(body, out);
        Ok(true)
    }

    /// The end of an HTTP/0.9 request line at the start of the unparsed bytes, whose head
    /// is not complete: it is a head of its own (a client sends nothing more, a server reads
    /// no fields after it); None for a line with a version or not complete yet. `scanned`:
    /// how far earlier calls searched (no line end before it while `line_checked` is off).
    /// A complete head is framed by `scan_block`, then cut after such a line.
    fn http09_line(&mut self, input: &[u8], scanned: usize) -> Option<usize> {
        if self.kind != Kind::Request || self.line_checked {
            return None;
        }
        let a = &input[self.pos..];
        let from = scanned.min(a.len());
        let nl = from + memchr::memchr(b'\n', &a[from..])?;
        if nl >= self.limits.max_head {
            return None;
        }
        if version_less(strip_eol(&a[..=nl])) {
            self.scanned = 0;
            Some(nl + 1)
        } else {
            self.line_checked = true;
            None
        }
    }

    /// Rejects a start line early, before its end arrives, when its first bytes already cannot be valid
    /// (binary data, NUL bytes): a request must start with a method token, a response with `HTTP/`.
    fn check_start(&self, input: &[u8]) -> Result<(), HttpError> {
        let a = &input[self.pos..];
        let a = &a[..a.len().min(32)];
        let a = &a[..a.iter().position(|&b| b == b'\n').unwrap_or(a.len())];
        match self.kind {
            Kind::Request => {
                let m = &a[..a.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(a.len())];
                if m.iter().any(|&b| !is_tchar(b) && b != b'\r') {
                    return Err(HttpError::BadRequestLine);
                }
            }
            Kind::Response => {
                let n = a.len().min(5);
                if a[..n] != b"HTTP/"[..n] {
                    return Err(HttpError::BadStatusLine);
                }
            }
        }
        Ok(())
    }

    fn start_body(&mut self, body: Body, out: &mut Vec<HttpEvent>) {
        match body {
            Body::None | Body::Fixed(0) => self.end_message(out),
            Body::Fixed(n) => self.state = State::Fixed(n),
            Body::Chunked => self.state = State::ChunkSize,
            Body::UntilClose => self.state = State::UntilClose,
        }
    }

    fn end_message(&mut self, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::MessageEnd);
        if self.raw_heads {
            // (the fast path keeps `pos` at 0 and `base` past what it took)
            self.msg_ends.push_back(self.base + self.pos as u64);
        }
        self.state = if self.tunnel_after {
            State::Tunnel
        } else if self.keep {
            State::Head { line_start: 0 }
        } else {
            State::Closed
        };
    }

    fn step_chunk_size(&mut self, input: &[u8]) -> Result<bool, HttpError> {
        let a = &input[self.pos..];
        let Some(i) = a.iter().position(|&b| b == b'\n') else {
            if a.len() > self.limits.max_chunk_line {
                return Err(HttpError::HeadTooLong);
            }
            return Ok(false);
        };
        if i > self.limits.max_chunk_line {
            return Err(HttpError::HeadTooLong);
        }
        let line = strip_eol(&a[..i + 1]);
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return Err(HttpError::BadChunk);
        }
        let mut size: u64 = 0;
        for &b in &line[..digits] {
            let d = (b as char).to_digit(16).unwrap_or(0) as u64;
            size = size.checked_mul(16).and_then(|s| s.checked_add(d)).ok_or(HttpError::BadChunk)?;
        }
        // Then optional whitespace and `;ext[=val]...`.
        let rest = &line[digits..];
        let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
        if !rest.is_empty() && (rest[0] != b';' || rest.iter().any(|&b| b == 0 || b == b'\r')) {
            return Err(HttpError::BadChunk);
        }
        self.pos += i + 1;
        self.state = if size == 0 { State::Trailers { line_start: 0 } } else { State::ChunkData(size) };
        Ok(true)
    }

    fn step_trailers(&mut self, input: &[u8], line_start: usize, out: &mut Vec<HttpEvent>) -> Result<bool, HttpError> {
        // (the first line may be the empty one: scan_block handles it)
        let Some(end) = self.scan_block(input, line_start, self.limits.max_head)? else {
            self.state = State::Trailers { line_start };
            return Ok(false);
        };
        if end <= 2 {
            // the usual last chunk "0\r\n\r\n": no trailer, nothing to parse
            self.pos += end;
            self.end_message(out);
            return Ok(true);
        }
        let block = input[self.pos..self.pos + end].to_vec();
        self.pos += end;
        let mut lines = split_lines(&block);
        let mut trailers = parse_fields(&mut lines, self.limits.max_headers, self.nul_in_values)?;
        trailers.end = lines.terminator.to_vec();
        if !trailers.is_empty() {
            out.push(HttpEvent::Trailers(trailers));
        }
        self.end_message(out);
        Ok(true)
    }
}

enum Body {
    None,
    Fixed(u64),
    Chunked,
    UntilClose,
}

/// A request method as far as response framing cares (RFC 7230 §3.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Connect,
    Other,
    /// An HTTP/0.9 request: its answer may have no status line.
    Http09,
}

impl Method {
    fn of(m: &[u8]) -> Method {
        if m.eq_ignore_ascii_case(b"HEAD") {
            Method::Head
        } else if m.eq_ignore_ascii_case(b"CONNECT") {
            Method::Connect
        } else {
            Method::Other
        }
    }
}

/// Where the parts of a head are: offsets into [`RawHead::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadInfo {
    /// Offset of the start line (after the empty lines that preceded it, RFC 7230 §3.5).
    pub line_start: usize,
    /// Offset of the first header field: just after the start line's terminator.
    pub fields_start: usize,
    /// `[start, end)` of the request's method, uri and version, or of the response's
    /// version, status and reason (reason without surrounding white space).
    pub parts: [(usize, usize); 3],
    /// Response status (0 for a request).
    pub status: u16,
    /// Every field is `name: value\r\n` (one space after the colon, no white space after
    /// the value) and the block ends with `\r\n`: a field rewritten in place gives the bytes
    /// a full re-serialisation would.
    pub canonical: bool,
    /// Some field continues on an obs-fold line (its value is the lines joined by a space).
    pub obs_fold: bool,
    /// The irregularities tolerated in this head: bits [`Anomaly::bit`].
    pub anomalies: u16,
}

/// A head as received (leading empty lines, start line, fields, empty line), validated,
/// with where its parts are ([`HttpParser::set_raw_heads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHead {
    pub bytes: Vec<u8>,
    pub info: HeadInfo,
    pub is_request: bool,
}

impl RawHead {
    /// Part `i` of the start line (see [`HeadInfo::parts`]).
    pub fn part(&self, i: usize) -> &[u8] {
        let (a, b) = self.info.parts[i.min(2)];
        &self.bytes[a..b]
    }

    /// Validates and locates the parts of `bytes`, a complete head (as `to_bytes` of a
    /// [`Request`] or [`Response`] gives it).
    pub fn scan(bytes: Vec<u8>, is_request: bool) -> Result<RawHead, HttpError> {
        let lead = bytes.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let kind = if is_request { Kind::Request } else { Kind::Response };
        let (info, _) = scan_head(&bytes, lead, kind, usize::MAX, false)?;
        Ok(RawHead { bytes, info, is_request })
    }

    /// The head as an owned [`Request`] or [`Response`] event.
    fn parse(&self, max_headers: usize, nul_ok: bool) -> Result<HttpEvent, HttpError> {
        let b = &self.bytes;
        let first = strip_eol(&b[self.info.line_start..self.info.fields_start]);
        let mut headers = Headers::new();
        if self.info.fields_start < b.len() {
            let mut lines = split_lines(&b[self.info.fields_start..]);
            headers = parse_fields(&mut lines, max_headers, nul_ok)?;
            headers.end = lines.terminator.to_vec();
        } else {
            headers.end.clear(); // an HTTP/0.9 request line alone
        }
        let raw_line = b[..self.info.fields_start].to_vec();
        Ok(if self.is_request {
            let (method, uri, version) = parse_request_line(first)?;
            let orig = (method.clone(), uri.clone(), version.clone());
            HttpEvent::Request(Box::new(Request { method, uri, version, headers, raw_line, orig }))
        } else {
            let (version, status, reason) = parse_status_line(first)?;
            let orig = (version.clone(), status, reason.clone());
            HttpEvent::Response(Box::new(Response { version, status, reason, headers, raw_line, orig }))
        })
    }
}

/// What the framing of a message depends on in its fields (RFC 7230 §3.3.3, §6.1).
struct Framing {
    /// Transfer-Encoding: None when absent, else whether its last coding is chunked.
    chunked: Option<bool>,
    content_length: Result<Option<u64>, HttpError>,
    /// Content-Length repeated with the same value.
    duplicate_length: bool,
    close: bool,
    keep_alive: bool,
}

/// White space as `str::trim` removes it (ASCII part).
fn trim_ws(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let s = b.iter().take_while(|c| ws(c)).count();
    let b = &b[s..];
    let e = b.iter().rev().take_while(|c| ws(c)).count();
    &b[..b.len() - e]
}

impl Framing {
    fn new() -> Framing {
        Framing { chunked: None, content_length: Ok(None), duplicate_length: false, close: false, keep_alive: false }
    }

    fn of(h: &Headers) -> Framing {
        let mut f = Framing::new();
        for (n, v) in h.iter() {
            f.field(n.as_bytes(), v.as_bytes());
        }
        f
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        let tokens = || value.split(|&c| c == b',').map(trim_ws);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = tokens().rfind(|t| !t.is_empty());
            match last {
                Some(t) => self.chunked = Some(t.eq_ignore_ascii_case(b"chunked")),
                None => self.chunked = Some(self.chunked.unwrap_or(false)),
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Ok(mut len) = self.content_length else { return };
            for p in tokens() {
                if p.is_empty() || p.len() > 20 || !p.iter().all(u8::is_ascii_digit) {
                    self.content_length = Err(HttpError::BadContentLength);
                    return;
                }
                let n = p.iter().try_fold(0u64, |a, &d| a.checked_mul(10)?.checked_add((d - b'0') as u64));
                match n {
                    Some(n) if len.is_none_or(|l| l == n) => {
                        self.duplicate_length |= len.is_some();
                        len = Some(n)
                    }
                    _ => {
                        self.content_length = Err(HttpError::BadContentLength);
                        return;
                    }
                }
            }
            self.content_length = Ok(len);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens() {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    /// Whether the connection stays open after the message (HTTP/1.0: only when asked).
    fn keep_alive(&self, version: &[u8]) -> bool {
        if self.close {
            return false;
        }
        if version.eq_ignore_ascii_case(b"HTTP/1.0") {
            return self.keep_alive;
        }
        true
    }

    fn request_body(&self) -> Result<Body, HttpError> {
        match self.chunked {
            Some(true) => Ok(Body::Chunked),
            Some(false) => Err(HttpError::BadTransferEncoding),
            None => Ok(self.content_length?.map_or(Body::None, Body::Fixed)),
        }
    }

    fn response_body(&self) -> Result<Body, HttpError> {
        match self.chunked {
            Some(true) => Ok(Body::Chunked),
            Some(false) => Ok(Body::UntilClose),
            None => Ok(self.content_length?.map_or(Body::UntilClose, Body::Fixed)),
        }
    }
}

/// Validates a head (`b`, its start line at `line_start`) as `parse_request_line` /
/// `parse_status_line` and `parse_fields` do, without allocating: where its parts are,
/// and what its framing depends on.
/// `nul_ok`: a NUL in a field value is part of it (else [`HttpError::BadHeader`]).
fn scan_head(
    b: &[u8],
    line_start: usize,
    kind: Kind,
    max_headers: usize,
    nul_ok: bool,
) -> Result<(HeadInfo, Framing), HttpError> {
    let bad_line = if kind == Kind::Request { HttpError::BadRequestLine } else { HttpError::BadStatusLine };
    let nl = memchr::memchr(b'\n', &b[line_start..]).ok_or(bad_line)?;
    let fields_start = line_start + nl + 1;
    let first = strip_eol(&b[line_start..fields_start]);
    let mut info = HeadInfo { line_start, fields_start, ..HeadInfo::default() };
    let at = |p: &[u8]| p.as_ptr() as usize - b.as_ptr() as usize;
    let span = |p: &[u8]| (at(p), at(p) + p.len());
    let mut anomalies = 0;
    if first.len() + 2 > fields_start - line_start {
        anomalies |= Anomaly::BareLf.bit();
    }
    if kind == Kind::Request {
        let l = split_request_line(first)?;
        info.parts = [span(l.method), span(l.target), span(l.version)];
        anomalies |= l.anomalies;
        if l.anomalies & Anomaly::Http09Request.bit() != 0 {
            // an HTTP/0.9 head: the request line alone (the parser cuts what follows)
            info.anomalies = anomalies;
            return Ok((info, Framing::new()));
        }
    } else {
        let sp = first.iter().position(|&c| c == b' ').ok_or(HttpError::BadStatusLine)?;
        let v = &first[..sp];
        let rest = &first[sp..];
        let rest = &rest[rest.iter().take_while(|&&c| c == b' ').count()..];
        if !valid_version(v) || rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(HttpError::BadStatusLine);
        }
        info.status = rest[..3].iter().fold(0u16, |a, &c| a * 10 + (c - b'0') as u16);
        let reason = &rest[3..];
        if !reason.is_empty() && reason[0] != b' ' && reason[0] != b'\t' {
            return Err(HttpError::BadStatusLine);
        }
        let reason = trim_ows(reason);
        if reason.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(HttpError::BadStatusLine);
        }
        info.parts = [span(v), span(&rest[..3]), span(reason)];
    }
    let mut framing = Framing::new();
    let mut canonical = true;
    let mut count = 0;
    let mut st = fields_start;
    loop {
        // One search per line for its end and for what a line may not hold: a NUL, or a CR
        // other than the line end's.
        let rest = &b[st..];
        let mut i = memchr::memchr3(b'\n', b'\r', 0, rest).ok_or(HttpError::BadHeader)?;
        while nul_ok && rest[i] == 0 {
            i += 1 + memchr::memchr3(b'\n', b'\r', 0, &rest[i + 1..]).ok_or(HttpError::BadHeader)?;
        }
        let line_len = match rest[i] {
            b'\n' => {
                anomalies |= Anomaly::BareLf.bit();
                i + 1
            }
            b'\r' if rest.get(i + 1) == Some(&b'\n') => i + 2,
            _ => return Err(HttpError::BadHeader),
        };
        let (line, content) = (&rest[..line_len], &rest[..i]);
        st += line_len;
        if content.is_empty() {
            canonical &= line == b"\r\n";
            break;
        }
        if content[0] == b' ' || content[0] == b'\t' {
            if count == 0 {
                return Err(HttpError::BadHeader);
            }
            info.obs_fold = true;
            continue;
        }
        // the name: token characters up to the colon (one pass for both)
        let end = content.iter().position(|&c| !is_tchar(c)).unwrap_or(content.len());
        let name = &content[..end];
        let mut colon = end;
        if matches!(content.get(end), Some(b' ' | b'\t')) && end > 0 {
            colon += content[end..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
            check_space_before_colon(name)?;
            anomalies |= Anomaly::SpaceBeforeColon.bit();
        }
        if end == 0 || content.get(colon) != Some(&b':') {
            return Err(HttpError::BadHeader);
        }
        let value = trim_ows(&content[colon + 1..]);
        if count >= max_headers {
            return Err(HttpError::TooManyHeaders);
        }
        count += 1;
        canonical &= line.ends_with(b"\r\n")
            && content.get(colon + 1) == Some(&b' ')
            && value.len() + colon + 2 == content.len();
        framing.field(name, value);
    }
    if info.obs_fold {
        // joined values: the allocating parser, for this rare (deprecated) form
        framing = Framing::of(&parse_fields(&mut split_lines(&b[fields_start..]), max_headers, nul_ok)?);
        anomalies |= Anomaly::ObsFold.bit();
    }
    if framing.duplicate_length {
        anomalies |= Anomaly::DuplicateContentLength.bit();
    }
    let irregular = Anomaly::SpaceBeforeColon.bit() | Anomaly::Http09Request.bit();
    info.canonical = canonical && !info.obs_fold && anomalies & irregular == 0;
    info.anomalies = anomalies;
    Ok((info, framing))
}

/// Where a header field is in a head (see [`find_field`]); offsets into the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPos {
    /// Just after the colon.
    pub after_colon: usize,
    /// The `\n` ending the field's line.
    pub line_end: usize,
    /// The value, `[start, end)`, without the line's CR and surrounding spaces and tabs.
    pub value: (usize, usize),
}

/// The first field named `name` (ASCII case-insensitive) on a line starting at offset
/// `from` of `head` or after it, up to the empty line ending the block. For heads
/// [`scan_head`] validated (names are tokens: a name is followed by its colon). This is
/// what the Lua side of the datapath reads headers with (through an FFI call, so that
/// a lookup creates no Lua string but the value's).
pub fn find_field(head: &[u8], from: usize, name: &[u8]) -> Option<FieldPos> {
    let n = name.len();
    let mut st = from;
    while st < head.len() {
        let rest = &head[st..];
        if n == 0 || rest[0] == b'\r' || rest[0] == b'\n' {
            return None;
        }
        let nl = st + memchr::memchr(b'\n', rest)?;
        let colon = match rest.get(n) {
            Some(b':') => Some(n),
            // `name : value` (tolerated, flagged space_before_colon)
            Some(b' ' | b'\t') => Some(n + rest[n..].iter().take_while(|&&c| is_blank(c)).count()),
            _ => None,
        };
        if let Some(colon) = colon.filter(|&c| rest.get(c) == Some(&b':') && rest[..n].eq_ignore_ascii_case(name)) {
            let after_colon = st + colon + 1;
            let v = trim_ows(strip_eol(&head[after_colon..=nl]));
            let vs = v.as_ptr() as usize - head.as_ptr() as usize;
            return Some(FieldPos { after_colon, line_end: nl, value: (vs, vs + v.len()) });
        }
        st = nl + 1;
    }
    None
}

/// The end of the first empty line that follows a line end in `h` (the offset past it): the
/// end of a head or trailer block whose first line is not empty. One vectorized search for
/// the usual CRLF form (a search per line cost a call each), then one for bare LF line
/// ends before it.
fn block_end(h: &[u8]) -> Option<usize> {
    use std::sync::LazyLock;
    static CRLF: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\n\r\n"));
    static LF: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));
    let crlf = CRLF.find(h);
    let before = crlf.map_or(h, |p| &h[..p + 1]);
    match (LF.find(before), crlf) {
        (Some(p), _) => Some(p + 2),
        (None, Some(p)) => Some(p + 3),
        (None, None) => None,
    }
}

/// One field set by a rule's `set_headers` (applied by the engine, see `crate::dissectors::http::prefilter`):
/// `value` None removes the field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSet {
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// `head` with `sets` applied in order, as `headers[name] = value` does in Lua: the first
/// field of that name (ASCII case-insensitive) gets the value, its name's spelling kept,
/// and the later ones go; a name not present is appended; None removes every field of
/// that name. A field continued on obs-fold lines goes with its continuation lines. The
/// new head is written into `out` (cleared first: a buffer the caller reuses); false when
/// it is the same as `head`. For heads [`scan_head`] validated; names and values are checked
/// when the rules load (tokens; no CR or LF).
pub fn set_fields<'a, I>(head: &RawHead, sets: I, out: &mut Vec<u8>) -> bool
where
    I: Iterator<Item = &'a FieldSet> + Clone,
{
    let b = &head.bytes;
    if head.info.anomalies & Anomaly::Http09Request.bit() != 0 {
        return false; // an HTTP/0.9 request has no fields (a server reads none after it)
    }
    let bit = |i: usize| 1u64 << i.min(63); // (rules load at most 64 sets per event)
    let field = |out: &mut Vec<u8>, name: &[u8], v: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    };
    out.clear();
    out.reserve(b.len() + 64);
    out.extend_from_slice(&b[..head.info.fields_start]);
    // sets whose name was met: later fields of that name go, nothing is appended for it
    let mut done = 0u64;
    // A name removed then set again (`headers[n] = nil` then `headers[n] = v`): its fields go
    // from their places and it is appended, as the Lua headers do.
    let reappended = |name: &[u8]| {
        let mut removed = false;
        for t in sets.clone().filter(|t| t.name.eq_ignore_ascii_case(name)) {
            match t.value {
                None => removed = true,
                Some(_) if removed => return true,
                Some(_) => {}
            }
        }
        false
    };
    // the current field was replaced or removed: its obs-fold continuation lines go too
    let mut dropping = false;
    let mut st = head.info.fields_start;
    let block_end = loop {
        let Some(rel) = memchr::memchr(b'\n', &b[st..]) else { break b.len() };
        let line = &b[st..=st + rel];
        if line == b"\n" || line == b"\r\n" {
            break st;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if !dropping {
                out.extend_from_slice(line);
            }
        } else {
            let name = trim_ows(&line[..line.iter().position(|&c| c == b':').unwrap_or(0)]);
            // the last set of a name wins (as successive assignments do)
            match sets.clone().enumerate().filter(|(_, s)| s.name.eq_ignore_ascii_case(name)).last() {
                None => {
                    dropping = false;
                    out.extend_from_slice(line);
                }
                Some((i, s)) => {
                    dropping = true;
                    if let (0, Some(v), false) = (done & bit(i), &s.value, reappended(name)) {
                        field(out, name, v);
                    }
                    for (k, t) in sets.clone().enumerate() {
                        if t.name.eq_ignore_ascii_case(name) {
                            done |= bit(k);
                        }
                    }
                }
            }
        }
        st += rel + 1;
    };
    // Appended: in the order of the sets that appended them (the first value after the
    // name's last removal, or its first value), with that set's spelling of the name and the
    // name's last value.
    for (i, s) in sets.clone().enumerate() {
        let same = |t: &&FieldSet| t.name.eq_ignore_ascii_case(&s.name);
        let appends = s.value.is_some()
            && sets.clone().take(i).filter(same).last().is_none_or(|t| t.value.is_none())
            && sets.clone().skip(i + 1).filter(same).all(|t| t.value.is_some());
        if appends && (done & bit(i) == 0 || reappended(&s.name)) {
            if let Some(v) = sets.clone().filter(same).last().and_then(|t| t.value.as_ref()) {
                field(out, &s.name, v);
            }
        }
    }
    out.extend_from_slice(&b[block_end..]);
    *out != *b
}

/// Lines of a block, each with its terminator; `terminator` is the final empty line once reached.
struct Lines<'a> {
    rest: &'a [u8],
    terminator: &'a [u8],
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<&'a [u8]> {
        let i = memchr::memchr(b'\n', self.rest)?;
        Some(&self.rest[..i + 1])
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let l = self.peek()?;
        self.rest = &self.rest[l.len()..];
        Some(l)
    }
}

fn split_lines(b: &[u8]) -> Lines<'_> {
    Lines { rest: b, terminator: b"\r\n" }
}

fn strip_eol(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// RFC 7230 token characters, as a table (checked for every byte of every field name).
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric();
        i += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses header fields up to (and consuming) the empty line; obs-fold continuation lines are joined.
/// `nul_ok`: a NUL in a value is part of it (else [`HttpError::BadHeader`]); a CR that does not
/// end the line is always an error.
fn parse_fields(lines: &mut Lines<'_>, max: usize, nul_ok: bool) -> Result<Headers, HttpError> {
    let bad = |b: &u8| (*b == 0 && !nul_ok) || *b == b'\r';
    let mut h = Headers::new();
    while let Some(line) = lines.next() {
        let content = strip_eol(line);
        if content.is_empty() {
            lines.terminator = line;
            return Ok(h);
        }
        if content[0] == b' ' || content[0] == b'\t' {
            // obs-fold: continuation of the previous field.
            let Some(f) = h.fields.last_mut() else { return Err(HttpError::BadHeader) };
            let cont = trim_ows(content);
            if cont.iter().any(bad) {
                return Err(HttpError::BadHeader);
            }
            if !cont.is_empty() {
                if !f.value.is_empty() {
                    f.value.push(' ');
                }
                f.value.push_str(&lossy(cont));
            }
            if let Some(r) = f.raw.as_mut() {
                r.extend_from_slice(line);
            }
            continue;
        }
        let colon = content.iter().position(|&b| b == b':').ok_or(HttpError::BadHeader)?;
        let name = trim_ows(&content[..colon]); // (no blank before it: not an obs-fold line)
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::BadHeader);
        }
        if name.len() < colon {
            check_space_before_colon(name)?;
        }
        let value = trim_ows(&content[colon + 1..]);
        if value.iter().any(bad) {
            return Err(HttpError::BadHeader);
        }
        if h.fields.len() >= max {
            return Err(HttpError::TooManyHeaders);
        }
        h.fields.push(Field { name: lossy(name), value: lossy(value), raw: Some(line.to_vec()) });
    }
    // Callers always pass a block ending with an empty line.
    Err(HttpError::BadHeader)
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let s = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    let b = &b[s..];
    let e = b.iter().rev().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[..b.len() - e]
}

fn valid_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// A request line's parts (slices of it) and the anomalies of its form.
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    /// Empty for an HTTP/0.9 line (at the end of the target).
    version: &'a [u8],
    anomalies: u16,
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Whether a token is meant as a version: it starts with `HTTP/`, in any case.
fn is_version_token(t: &[u8]) -> bool {
    t.len() >= 5 && t[..5].eq_ignore_ascii_case(b"HTTP/")
}

/// Whether a request line (without its line end) has no version: HTTP/0.9 (`GET /x`) or
/// an error ([`split_request_line`]'s criterion), checked as soon as the line is complete:
/// the head is then that line alone.
fn version_less(l: &[u8]) -> bool {
    let t = trim_ows(l);
    !is_version_token(&t[t.iter().rposition(|&c| is_blank(c)).map_or(0, |i| i + 1)..])
}

/// Splits a request line (without its line end) as libhtp does: the method is the first
/// token, the version the last one when it starts with `HTTP/` (in any case; it must then be
/// `HTTP/d.d`), the target everything between, blanks around it trimmed (it may hold
/// some). A method and one target token without a version is an HTTP/0.9 line; more
/// tokens without a version are an error. NUL and CR in the target stay errors:
/// C servers end the target at a NUL and some parsers end the line at a CR, so that a
/// server would not see the target the rules see.
fn split_request_line(l: &[u8]) -> Result<RequestLine<'_>, HttpError> {
    let r = split_request_line_inner(l);
    if r.is_err() && version_at_fault(l) {
        return Err(HttpError::BadVersion);
    }
    r
}

/// Whether a refused request line is refused for its version, as Haka's grammar saw it
/// (method, blanks, a target of printable bytes, blanks, then no `HTTP/digits.digits`):
/// the alert then names the version ("invalid http version") rather than the line.
fn version_at_fault(l: &[u8]) -> bool {
    let mut i = l.iter().position(|&c| is_blank(c) || c < b' ' || c == 0x7f).unwrap_or(l.len());
    if i == 0 || !l[..i].iter().all(|&c| is_tchar(c)) || l.get(i).is_none_or(|&c| !is_blank(c)) {
        return false;
    }
    let skip_blanks = |i: &mut usize| {
        let s = *i;
        while l.get(*i).is_some_and(|&c| is_blank(c)) {
            *i += 1;
        }
        *i > s
    };
    skip_blanks(&mut i);
    let s = i;
    while l.get(i).is_some_and(|&c| c.is_ascii_graphic()) {
        i += 1;
    }
    if i == s || !skip_blanks(&mut i) {
        return false;
    }
    let v = &l[i..];
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let Some(rest) = v.strip_prefix(b"HTTP/") else { return true };
    let a = digits(rest);
    a == 0 || rest.get(a) != Some(&b'.') || digits(&rest[a + 1..]) == 0
}

fn split_request_line_inner(l: &[u8]) -> Result<RequestLine<'_>, HttpError> {
    let bad = Err(HttpError::BadRequestLine);
    let t = trim_ows(l);
    let mut anomalies = if t.len() == l.len() { 0 } else { Anomaly::RequestLineWhitespace.bit() };
    let Some(m_end) = t.iter().position(|&c| is_blank(c)) else { return bad };
    let method = &t[..m_end];
    if !method.iter().all(|&c| is_tchar(c)) {
        return bad;
    }
    let v_start = t.iter().rposition(|&c| is_blank(c)).map_or(0, |i| i + 1);
    let (mid, version) = if is_version_token(&t[v_start..]) {
        let v = &t[v_start..];
        if !matches!(v[5..], [a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit()) {
            return bad;
        }
        if !v.starts_with(b"HTTP/") {
            anomalies |= Anomaly::LowercaseVersion.bit();
        }
        (&t[m_end..v_start], v)
    } else if t[m_end..v_start].iter().all(|&c| is_blank(c)) {
        anomalies |= Anomaly::Http09Request.bit();
        (&t[m_end..], &t[t.len()..])
    } else {
        // neither a version nor a lone target (`GET / HTML/1.1`, `GET /a b`): servers answer
        // 400 (a HTTP/0.9 server would take `/a` as the target, the rules `/a b`)
        return bad;
    };
    let target = trim_ows(mid);
    if target.is_empty() {
        return bad;
    }
    // one SP around the target (mid starts with a blank; so does it end, with a version)
    let before = target.as_ptr() as usize - mid.as_ptr() as usize;
    let after = mid.len() - before - target.len();
    if before != 1 || mid[0] != b' ' || (!version.is_empty() && (after != 1 || mid[mid.len() - 1] != b' ')) {
        anomalies |= Anomaly::RequestLineWhitespace.bit();
    }
    if has_blank_or_control(target) {
        for &c in target {
            if c <= b' ' || c == 0x7f {
                anomalies |= match c {
                    b' ' | b'\t' => Anomaly::RequestTargetSpaces.bit(),
                    0 | b'\r' => return bad,
                    _ => Anomaly::RequestTargetControl.bit(),
                };
            }
        }
    }
    Ok(RequestLine { method, target, version, anomalies })
}

/// Whether `b` holds a byte <= 0x20 or 0x7f, 8 bytes per step (a target seldom has one:
/// this keeps the request line's cost that of the split before the tolerant parser).
fn has_blank_or_control(b: &[u8]) -> bool {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = w.try_into().map_or(0, u64::from_le_bytes);
        let y = x ^ (0x7f * L);
        // a byte below 0x21, or a zero byte of x ^ 0x7f..
        if ((x.wrapping_sub(0x21 * L) & !x) | (y.wrapping_sub(L) & !y)) & H != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&c| c <= b' ' || c == 0x7f)
}

/// Field names whose fields frame the body: one of them with white space before its colon
/// stays an error, since servers that refuse the field and servers that take it would
/// delimit the body differently (request smuggling).
fn check_space_before_colon(name: &[u8]) -> Result<(), HttpError> {
    if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding") {
        return Err(HttpError::BadHeader);
    }
    Ok(())
}

fn parse_request_line(l: &[u8]) -> Result<(String, String, String), HttpError> {
    let l = split_request_line(l)?;
    Ok((lossy(l.method), lossy(l.target), lossy(l.version)))
}

fn parse_status_line(l: &[u8]) -> Result<(String, u16, String), HttpError> {
    let sp = l.iter().position(|&b| b == b' ').ok_or(HttpError::BadStatusLine)?;
    let v = &l[..sp];
    let rest = &l[sp..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ').count()..];
    if !valid_version(v) || rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadStatusLine);
    }
    let status = rest[..3].iter().fold(0u16, |a, &b| a * 10 + (b - b'0') as u16);
    let reason = &rest[3..];
    if !reason.is_empty() && reason[0] != b' ' && reason[0] != b'\t' {
        return Err(HttpError::BadStatusLine);
    }
    let reason = trim_ows(reason);
    if reason.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::BadStatusLine);
    }
    Ok((lossy(v), status, lossy(reason)))
}

/// The parts of a URI as Haka's `http.uri.split` gives them. Absent or empty components are `None`
/// (Haka leaves them nil).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UriParts {
    pub scheme: Option<String>,
    /// `userinfo@host:port`.
    pub authority: Option<String>,
    pub userinfo: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    /// Query arguments as written (not decoded), each name once with its last value, in the order
    /// the names first appear (Haka: a table name -> value); `None` when there is no query.
    pub args: Option<Vec<(String, String)>>,
    pub fragment: Option<String>,
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Sets `name` in an argument list: a repeated name keeps its place and takes the last value.
fn set_arg(args: &mut Vec<(String, String)>, name: &str, value: &str) {
    match args.iter_mut().find(|(k, _)| k == name) {
        Some(a) => a.1 = value.to_string(),
        None => args.push((name.to_string(), value.to_string())),
    }
}

/// Haka's query arguments: repeatedly `name[=value][&]` where the name runs up to `=` or `&` (at
/// least one byte; a byte that cannot start a name is skipped) and the value up to `&` or `?`.
/// A name without `=` has the value `""`.
pub fn split_args(q: &str) -> Vec<(String, String)> {
    let b = q.as_bytes();
    let n = b.len();
    let mut args = Vec::new();
    let mut pos = 0;
    while pos < n {
        let mut k = pos;
        while k < n && b[k] != b'=' && b[k] != b'&' {
            k += 1;
        }
        if k == pos {
            pos += 1;
            continue;
        }
        let mut e = k;
        if e < n && b[e] == b'=' {
            e += 1;
        }
        let vs = e;
        while e < n && b[e] != b'&' && b[e] != b'?' {
            e += 1;
        }
        set_arg(&mut args, &q[pos..k], &q[vs..e]);
        if e < n && b[e] == b'&' {
            e += 1;
        }
        pos = e;
    }
    args
}

impl UriParts {
    /// Re-assembles the URI as Haka's `tostring(split)` does: scheme, user/password and port only
    /// with a host (`scheme://user:pass@host:port`; a `userinfo` without `:` is left out), then the
    /// path, `?` and the query rebuilt from `args` (`name=value` joined by `&`; nothing when there
    /// are no arguments), `#fragment`.
    pub fn to_uri(&self) -> String {
        let mut s = String::new();
        if let Some(h) = &self.host {
            if let Some(sc) = &self.scheme {
                s.push_str(sc);
                s.push_str("://");
            }
            if let (Some(u), Some(p)) = (&self.user, &self.pass) {
                s.push_str(u);
                s.push(':');
                s.push_str(p);
                s.push('@');
            }
            s.push_str(h);
            if let Some(p) = &self.port {
                s.push(':');
                s.push_str(p);
            }
        }
        if let Some(p) = &self.path {
            s.push_str(p);
        }
        if self.query.is_some() {
            if let Some(args) = self.args.as_ref().filter(|a| !a.is_empty()) {
                s.push('?');
                for (i, (k, v)) in args.iter().enumerate() {
                    if i > 0 {
                        s.push('&');
                    }
                    s.push_str(k);
                    s.push('=');
                    s.push_str(v);
                }
            }
        }
        if let Some(f) = &self.fragment {
            s.push('#');
            s.push_str(f);
        }
        s
    }

    /// Haka's `split:normalize()`, in place: unreserved `%`-escapes decoded and the others
    /// upper-cased in every component (argument values too, not their names); `http` as the scheme
    /// when there is an authority but no scheme; scheme and host lower-cased; port `80` dropped
    /// (whatever the scheme); path `/` when the scheme is `http` and there is no path; dot segments
    /// removed from the path.
    pub fn normalize(&mut self) {
        for f in [
            &mut self.scheme,
            &mut self.authority,
            &mut self.userinfo,
            &mut self.user,
            &mut self.pass,
            &mut self.host,
            &mut self.port,
            &mut self.path,
            &mut self.query,
            &mut self.fragment,
        ]
        .into_iter()
        .flatten()
        {
            *f = normalize_escapes(f);
        }
        for (_, v) in self.args.iter_mut().flatten() {
            *v = normalize_escapes(v);
        }
        if self.scheme.is_none() && self.authority.is_some() {
            self.scheme = Some("http".into());
        }
        if let Some(s) = self.scheme.as_mut() {
            s.make_ascii_lowercase();
        }
        if let Some(h) = self.host.as_mut() {
            h.make_ascii_lowercase();
        }
        if self.port.as_deref() == Some("80") {
            self.port = None;
        }
        if self.scheme.as_deref() == Some("http") && self.path.as_deref().is_none_or(str::is_empty) {
            self.path = Some("/".into());
        }
        if let Some(p) = self.path.as_mut() {
            *p = remove_dot_segments(p);
        }
    }
}

/// Splits a URI as Haka's `http.uri.split` does (not RFC 3986's grammar):
/// - `core[?query][#fragment]`: the core runs up to the first `?` or `#`; the `?`s and `#`s that
///   follow it are skipped; the query runs up to the next `#`, the fragment is the rest;
/// - a scheme is only letters followed by `://` (a bare `://` is dropped);
/// - what follows, up to the first `/`, is the authority (also without a scheme:
///   `www.example.com/foo` has the host `www.example.com`), the rest the path;
/// - in the authority: `userinfo@` up to the first `@`; the port is `:` then one byte other than
///   `:` then digits, at the end (`:8` is not a port; IPv6 `[::1]:81` has the port `81`); the rest
///   the host; `userinfo` is `user:pass` split at its last `:` when the user is not empty;
/// - query arguments: [`split_args`].
pub fn split_uri(uri: &str) -> UriParts {
    let mut p = UriParts::default();
    let b = uri.as_bytes();
    let n = b.len();
    let core_end = b.iter().position(|&c| c == b'#' || c == b'?').unwrap_or(n);
    let mut i = core_end;
    while i < n && b[i] == b'?' {
        i += 1;
    }
    let q_end = b[i..].iter().position(|&c| c == b'#').map_or(n, |j| i + j);
    let mut f = q_end;
    while f < n && b[f] == b'#' {
        f += 1;
    }
    let query = &uri[i..q_end];
    if !query.is_empty() {
        p.query = Some(query.to_string());
        p.args = Some(split_args(query));
    }
    p.fragment = nonempty(&uri[f..]);

    let mut rest = &uri[..core_end];
    let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
    if rest[letters..].starts_with("://") {
        if letters > 0 {
            p.scheme = Some(rest[..letters].to_string());
        }
        rest = &rest[letters + 3..];
    }
    let slash = rest.find('/').unwrap_or(rest.len());
    let (auth, path) = rest.split_at(slash);
    p.path = nonempty(path);
    if auth.is_empty() {
        return p;
    }
    p.authority = Some(auth.to_string());
    let mut hostport = auth;
    if let Some(at) = auth.find('@') {
        p.userinfo = nonempty(&auth[..at]);
        hostport = &auth[at + 1..];
    }
    let hb = hostport.as_bytes();
    let port_at = (0..hb.len()).find(|&k| {
        hb[k] == b':'
            && k + 2 < hb.len()
            && hb[k + 1] != b':'
            && hb[k + 2..].iter().all(u8::is_ascii_digit)
    });
    if let Some(k) = port_at {
        p.port = Some(hostport[k + 1..].to_string());
        hostport = &hostport[..k];
    }
    p.host = nonempty(hostport);
    if let Some(ui) = &p.userinfo {
        if let Some(c) = ui.rfind(':') {
            if c > 0 {
                p.user = Some(ui[..c].to_string());
                p.pass = Some(ui[c + 1..].to_string());
            }
        }
    }
    p
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes percent-escapes of unreserved characters, upper-cases the hex digits of the others.
fn normalize_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                let c = h * 16 + l;
                if is_unreserved(c) {
                    out.push(c);
                } else {
                    out.push(b'%');
                    out.push(b[i + 1].to_ascii_uppercase());
                    out.push(b[i + 2].to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    lossy(&out)
}

/// Haka's dot-segment removal (RFC 3986 §5.2.4's steps, with Haka's output assembly): leading
/// `../` and `./` dropped, `/../` and a final `/..` remove the previous segment, `/./` and a final
/// `/.` dropped; `/a/b/.` gives `/a/b/`, `//a` stays `//a`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut p = path;
    while !p.is_empty() {
        if let Some(r) = p.strip_prefix("../") {
            p = r;
        } else if let Some(r) = p.strip_prefix("./") {
            p = r;
        } else if p.starts_with("/../") {
            p = &p[3..];
            out.pop();
        } else if p == "/.." {
            p = "/";
            out.pop();
        } else if p.starts_with("/./") {
            p = &p[2..];
        } else if p == "/." {
            p = "/";
        } else {
            let s = p.strip_prefix('/').unwrap_or(p);
            let end = s.find('/').unwrap_or(s.len());
            out.push(&s[..end]);
            p = &s[end..];
        }
    }
    let mut r = String::with_capacity(path.len());
    if path.starts_with('/') {
        r.push('/');
    }
    r.push_str(&out.join("/"));
    r
}

/// Haka's `http.uri.normalize`: [`split_uri`], [`UriParts::normalize`], [`UriParts::to_uri`].
pub fn normalize_uri(uri: &str) -> String {
    let mut p = split_uri(uri);
    p.normalize();
    p.to_uri()
}

/// Splits a `Cookie` / `Set-Cookie` value into `(name, value)` pairs (Haka: `http.cookies.split`).
pub fn split_cookies(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.find('=') {
            Some(i) => (c[..i].trim().to_string(), c[i + 1..].trim().to_string()),
            None => (c.to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(p: &mut HttpParser, data: &[u8]) -> Vec<HttpEvent> {
        p.feed(data).expect("parse")
    }

    /// Feeds byte by byte and merges adjacent Body events.
    fn feed_bytes(p: &mut HttpParser, data: &[u8]) -> Result<Vec<HttpEvent>, HttpError> {
        let mut ev = Vec::new();
        for b in data {
            ev.extend(p.feed(std::slice::from_ref(b))?);
        }
        Ok(merge_bodies(ev))
    }

    fn merge_bodies(ev: Vec<HttpEvent>) -> Vec<HttpEvent> {
        let mut out: Vec<HttpEvent> = Vec::new();
        for e in ev {
            match (&e, out.last_mut()) {
                (HttpEvent::Body(b), Some(HttpEvent::Body(prev)))
                | (HttpEvent::Tunnel(b), Some(HttpEvent::Tunnel(prev))) => {
                    prev.extend_from_slice(b);
                    continue;
                }
                _ => {}
            }
            out.push(e);
        }
        out
    }

    fn req(e: &HttpEvent) -> &Request {
        match e {
            HttpEvent::Request(r) => r,
            other => panic!("expected request, got {other:?}"),
        }
    }

    fn resp(e: &HttpEvent) -> &Response {
        match e {
            HttpEvent::Response(r) => r,
            other => panic!("expected response, got {other:?}"),
        }
    }

    const GET: &[u8] =
        b"GET /index.html?a=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n";

    #[test]
    fn simple_get() {
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, GET);
        assert_eq!(ev.len(), 2);
        let r = req(&ev[0]);
        assert_eq!((r.method.as_str(), r.uri.as_str(), r.version.as_str()), ("GET", "/index.html?a=1", "HTTP/1.1"));
        assert_eq!(r.headers.get("host"), Some("www.example.com"));
        assert_eq!(r.headers.len(), 3);
        assert_eq!(ev[1], HttpEvent::MessageEnd);
        assert!(r.keep_alive());
        assert_eq!(r.to_bytes(), GET);
        assert!(p.is_idle());
        assert_eq!(p.feed_eof().unwrap(), vec![]);
    }

    #[test]
    fn every_split_point() {
        let mut whole = HttpParser::request();
        let expect = feed_all(&mut whole, GET);
        for cut in 0..=GET.len() {
            let mut p = HttpParser::request();
            let mut ev = feed_all(&mut p, &GET[..cut]);
            ev.extend(feed_all(&mut p, &GET[cut..]));
            assert_eq!(ev, expect, "cut at {cut}");
        }
        let mut p = HttpParser::request();
        assert_eq!(feed_bytes(&mut p, GET).unwrap(), expect);
    }

    #[test]
    fn every_split_point_of_bare_lf_heads_and_trailers() {
        // heads ending with "\n\n" (a "\n\r\n" may come later, in the body), chunked bodies
        // with and without trailers: the block ends are found wherever the segments split
        let req: &[u8] = b"GET /a HTTP/1.1\nHost: x\nX: y\r\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let resp: &[u8] = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\r\n\n\r\n\r\n0\r\nT: 1\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        // (body bytes come as they arrive: adjacent Body events are joined to compare)
        let joined = |ev: Vec<HttpEvent>| {
            let mut out: Vec<HttpEvent> = Vec::new();
            for e in ev {
                match (out.last_mut(), e) {
                    (Some(HttpEvent::Body(a)), HttpEvent::Body(b)) => a.extend_from_slice(&b),
                    (_, e) => out.push(e),
                }
            }
            out
        };
        for (mk, data) in [(HttpParser::request as fn() -> HttpParser, req), (HttpParser::response, resp)] {
            let expect = joined(feed_all(&mut mk(), data));
            assert!(expect.len() >= 4, "{expect:?}");
            for cut in 0..=data.len() {
                let mut p = mk();
                let mut ev = feed_all(&mut p, &data[..cut]);
                ev.extend(feed_all(&mut p, &data[cut..]));
                assert_eq!(joined(ev), expect, "cut at {cut}");
            }
            assert_eq!(joined(feed_bytes(&mut mk(), data).unwrap()), expect);
        }
    }

    #[test]
    fn pipelined_requests() {
        let mut data = GET.to_vec();
        data.extend_from_slice(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        data.extend_from_slice(b"\r\nGET /last HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, &data);
        assert_eq!(ev.len(), 7, "{ev:?}");
        assert_eq!(req(&ev[0]).uri, "/index.html?a=1");
        assert_eq!(req(&ev[2]).method, "POST");
        assert_eq!(ev[3], HttpEvent::Body(b"hello".to_vec()));
        assert_eq!(ev[4], HttpEvent::MessageEnd);
        assert_eq!(req(&ev[5]).uri, "/last");
        assert_eq!(ev[6], HttpEvent::MessageEnd);
        let mut p = HttpParser::request();
        assert_eq!(feed_bytes(&mut p, &data).unwrap(), ev);
        let rebuilt: Vec<u8> = ev
            .iter()
            .flat_map(|e| match e {
                HttpEvent::Request(r) => r.to_bytes(),
                HttpEvent::Body(b) => b.clone(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(rebuilt, data);
        assert!(req(&ev[5]).to_bytes().starts_with(b"\r\nGET /last"));
    }

    #[test]
    fn post_body_in_chunks() {
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"POST /up HTTP/1.1\r\nContent-Length: 11\r\n\r\nhel");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1], HttpEvent::Body(b"hel".to_vec()));
        assert!(!p.is_idle());
        assert_eq!(feed_all(&mut p, b"lo "), vec![HttpEvent::Body(b"lo ".to_vec())]);
        assert_eq!(feed_all(&mut p, b"worldGET"), vec![HttpEvent::Body(b"world".to_vec()), HttpEvent::MessageEnd]);
        assert_eq!(p.buffered(), 3);
        let ev = feed_all(&mut p, b" / HTTP/1.1\r\n\r\n");
        assert_eq!(req(&ev[0]).uri, "/");
        // Truncated body at EOF.
        let mut p = HttpParser::request();
        feed_all(&mut p, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(p.feed_eof(), Err(HttpError::Truncated));
        assert_eq!(p.feed(b"x"), Err(HttpError::Truncated));
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n\
5;name=value;flag\r\nhello\r\n7 ; ext=\"q\"\r\n, world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n";

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let mut p = HttpParser::response();
        let ev = merge_bodies(feed_all(&mut p, CHUNKED));
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert_eq!(resp(&ev[0]).status, 200);
        assert_eq!(ev[1], HttpEvent::Body(b"hello, world0123456789".to_vec()));
        match &ev[2] {
            HttpEvent::Trailers(t) => {
                assert_eq!(t.get("x-trailer"), Some("yes"));
                assert_eq!(t.len(), 2);
                assert_eq!(t.to_bytes(), b"X-Trailer: yes\r\nX-Other: 2\r\n\r\n");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(ev[3], HttpEvent::MessageEnd);
        let mut p = HttpParser::response();
        assert_eq!(feed_bytes(&mut p, CHUNKED).unwrap(), ev);
        // No trailers, then a second response.
        let mut p = HttpParser::response();
        let ev = feed_all(&mut p, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert_eq!(resp(&ev[3]).status, 404);
        assert_eq!(resp(&ev[3]).reason, "Not Found");
    }

    #[test]
    fn bad_chunks() {
        for body in [&b"zz\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"11111111111111111\r\n", b"5 x\r\n", b"-1\r\n"] {
            let mut p = HttpParser::response();
            let mut data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            data.extend_from_slice(body);
            assert_eq!(p.feed(&data), Err(HttpError::BadChunk), "{:?}", String::from_utf8_lossy(body));
        }
        let mut p = HttpParser::response();
        let mut data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5".to_vec();
        data.extend(std::iter::repeat_n(b' ', 5000));
        assert_eq!(p.feed(&data), Err(HttpError::HeadTooLong));
    }

    #[test]
    fn head_response_has_no_body() {
        let mut p = HttpParser::response();
        p.expect_response_to("HEAD");
        p.expect_response_to("GET");
        let ev = feed_all(
            &mut p,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert_eq!(ev[1], HttpEvent::MessageEnd);
        assert_eq!(ev[3], HttpEvent::Body(b"ok".to_vec()));
    }

    #[test]
    fn no_body_statuses() {
        let mut p = HttpParser::response();
        let ev = feed_all(
            &mut p,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
        );
        let statuses: Vec<u16> =
            ev.iter().filter_map(|e| if let HttpEvent::Response(r) = e { Some(r.status) } else { None }).collect();
        assert_eq!(statuses, [304, 204, 100, 200]);
        assert_eq!(ev.len(), 9, "{ev:?}");
        assert_eq!(ev[7], HttpEvent::Body(b"z".to_vec()));
    }

    #[test]
    fn http10_read_until_close() {
        let mut p = HttpParser::response();
        let ev = feed_all(&mut p, b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>");
        assert_eq!(ev.len(), 2);
        assert_eq!(feed_all(&mut p, b"</html>"), vec![HttpEvent::Body(b"</html>".to_vec())]);
        assert_eq!(p.feed_eof().unwrap(), vec![HttpEvent::MessageEnd]);
        assert_eq!(p.feed(b"more"), Err(HttpError::UnexpectedData));
    }

    #[test]
    fn connection_close_and_keep_alive() {
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n\r\n");
        assert!(!req(&ev[0]).keep_alive());
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\n\r\n"), Err(HttpError::UnexpectedData));
        // HTTP/1.0 with keep-alive: a second request is fine.
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
        assert_eq!(ev.len(), 4);
        assert!(!req(&ev[2]).keep_alive());
        assert_eq!(p.feed(b"G"), Err(HttpError::UnexpectedData));
        // Response with Connection: close and Content-Length ends at the length.
        let mut p = HttpParser::response();
        let ev = feed_all(&mut p, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(ev.last(), Some(&HttpEvent::MessageEnd));
        assert_eq!(p.feed_eof().unwrap(), vec![]);
    }

    #[test]
    fn connect_and_upgrade_tunnel() {
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01");
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[2], HttpEvent::Tunnel(b"\x16\x03\x01".to_vec()));
        let mut p = HttpParser::response();
        p.expect_response_to("CONNECT");
        let ev = feed_all(&mut p, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03");
        assert_eq!(ev[2], HttpEvent::Tunnel(b"\x16\x03".to_vec()));
        let mut p = HttpParser::response();
        let ev = feed_all(&mut p, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00");
        assert_eq!(ev[2], HttpEvent::Tunnel(b"\x81\x00".to_vec()));
        assert_eq!(p.feed_eof().unwrap(), vec![]);
    }

    #[test]
    fn headers_api() {
        let raw =
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\ncOOkie: a=1; b=2\r\nX-Dup:2  \r\nFolded: one\r\n  two\r\n\r\n";
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, raw);
        let mut r = req(&ev[0]).clone();
        assert_eq!(r.to_bytes(), raw);
        assert_eq!(r.headers.get("HOST"), Some("a"));
        assert_eq!(r.headers.get("x-dup"), Some("1"));
        assert_eq!(r.headers.get_all("X-DUP"), vec!["1", "2"]);
        assert_eq!(r.headers.get("folded"), Some("one two"));
        assert_eq!(r.headers.iter().nth(2), Some(("cOOkie", "a=1; b=2")));
        assert_eq!(r.split_cookies(), vec![("a".into(), "1".into()), ("b".into(), "2".into())]);
        r.headers.set("x-dup", "3");
        assert_eq!(r.headers.get_all("X-Dup"), vec!["3"]);
        assert_eq!(
            r.to_bytes(),
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 3\r\ncOOkie: a=1; b=2\r\nFolded: one\r\n  two\r\n\r\n"
        );
        assert_eq!(r.headers.remove("COOKIE"), 1);
        assert_eq!(r.headers.remove("nothing"), 0);
        r.headers.add("X-New", "v\r\nInjected: 1");
        r.headers.set("Other", "o");
        assert_eq!(
            r.to_bytes(),
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Dup: 3\r\nFolded: one\r\n  two\r\nX-New: v  Injected: 1\r\nOther: o\r\n\r\n"
        );
        r.uri = "/new".into();
        assert!(r.to_bytes().starts_with(b"GET /new HTTP/1.1\r\nHost: a\r\n"));
        // Bare LF heads and odd spacing are kept byte-identical too.
        let raw = b"HTTP/1.1  200  Fine  thanks\nServer:x\n\n";
        let mut p = HttpParser::response();
        let ev = feed_all(&mut p, raw);
        let r = resp(&ev[0]);
        assert_eq!((r.status, r.reason.as_str()), (200, "Fine  thanks"));
        assert_eq!(r.to_bytes(), raw);
        let mut r = r.clone();
        r.status = 302;
        r.reason = "Found".into();
        r.headers.set("Location", "http://x/");
        assert_eq!(r.to_bytes(), b"HTTP/1.1 302 Found\r\nServer:x\nLocation: http://x/\r\n\n");
    }

    #[test]
    fn limits() {
        let mut p = HttpParser::request();
        let mut data = b"GET / HTTP/1.1\r\nX: ".to_vec();
        data.extend(std::iter::repeat_n(b'a', 70 * 1024));
        assert_eq!(p.feed(&data), Err(HttpError::HeadTooLong));
        assert_eq!(p.feed(b"\r\n\r\n"), Err(HttpError::HeadTooLong));
        // Same, one byte at a time, stops at the limit.
        let mut p = HttpParser::request_with_limits(Limits { max_head: 100, ..Limits::default() });
        let r = feed_bytes(&mut p, &data);
        assert_eq!(r, Err(HttpError::HeadTooLong));
        // Exactly at the limit is fine.
        let mut p = HttpParser::request_with_limits(Limits { max_head: GET.len(), ..Limits::default() });
        assert!(p.feed(GET).is_ok());
        let mut p = HttpParser::request_with_limits(Limits { max_head: GET.len() - 1, ..Limits::default() });
        assert_eq!(p.feed(GET), Err(HttpError::HeadTooLong));
        let mut data = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..257 {
            data.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        let mut p = HttpParser::request();
        assert_eq!(p.feed(&data), Err(HttpError::TooManyHeaders));
        let mut p = HttpParser::response();
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        resp.extend_from_slice(&data[16..]);
        assert_eq!(p.feed(&resp), Err(HttpError::TooManyHeaders));
    }

    #[test]
    fn malformed() {
        let reqs: &[(&[u8], HttpError)] = &[
            (b"GET / HTTP/1.1 extra\r\n\r\n", HttpError::BadRequestLine),
            (b"GET / HTML/1.1\r\n\r\n", HttpError::BadVersion),
            (b"GET /a b\r\nHost: x\r\n\r\n", HttpError::BadVersion),
            (b"GET\r\n\r\n", HttpError::BadRequestLine),
            (b"GET  HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
            (b"GET / HTTP/1.x\r\n\r\n", HttpError::BadVersion),
            (b"GET / HTTP/11\r\n\r\n", HttpError::BadVersion),
            (b"GET /a\rb HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
            (b"GET /a\x00b\r\n", HttpError::BadRequestLine),
            (b"POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\nx", HttpError::BadHeader),
            (b"POST / HTTP/1.1\r\ntransfer-encoding\t: chunked\r\n\r\n", HttpError::BadHeader),
            (b"G(T / HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
            (b"GET / HTTX/1.1\r\n\r\n", HttpError::BadVersion),
            (b"GET /\x00 HTTP/1.1\r\n\r\n", HttpError::BadRequestLine),
            (b"\x00\x01\x02\x03\n\n", HttpError::BadRequestLine),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\n continuation\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", HttpError::BadHeader),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", HttpError::BadContentLength),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", HttpError::BadTransferEncoding),
        ];
        for (data, err) in reqs {
            let mut p = HttpParser::request();
            assert_eq!(p.feed(data), Err(*err), "{:?}", String::from_utf8_lossy(data));
            let mut p = HttpParser::request();
            assert_eq!(feed_bytes(&mut p, data), Err(*err), "bytewise {:?}", String::from_utf8_lossy(data));
        }
        let resps: &[&[u8]] = &[
            b"HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/x.1 200 OK\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\n\r\n",
        ];
        for data in resps {
            let mut p = HttpParser::response();
            assert_eq!(p.feed(data), Err(HttpError::BadStatusLine), "{:?}", String::from_utf8_lossy(data));
        }
        // Equal duplicate Content-Length values are accepted; huge (u64) lengths are just counters.
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(ev.len(), 3);
        let mut p = HttpParser::request();
        assert!(p.feed(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nabc").is_ok());
        // Missing CRLF: just waits, then EOF says truncated.
        let mut p = HttpParser::request();
        assert_eq!(feed_all(&mut p, b"GET / HTTP/1.1\r\nHost: x"), vec![]);
        assert_eq!(p.feed_eof(), Err(HttpError::Truncated));
        // Content-Length is ignored when chunked.
        let mut p = HttpParser::request();
        let ev = feed_all(
            &mut p,
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        );
        assert_eq!(ev.len(), 3, "{ev:?}");
    }

    /// Feeds `data` to a parser from `mk`: whole (then EOF), and split at every byte into two
    /// segments, and byte by byte; the events (bodies joined) and the error must be the same.
    fn same_at_every_split(mk: &dyn Fn() -> HttpParser, data: &[u8]) -> (Vec<HttpEvent>, Option<HttpError>) {
        let run = |cuts: &mut dyn Iterator<Item = &[u8]>| {
            let mut p = mk();
            let mut ev = Vec::new();
            for c in cuts {
                match p.feed(c) {
                    Ok(e) => ev.extend(e),
                    Err(e) => return (merge_bodies(ev), Some(e)),
                }
            }
            match p.feed_eof() {
                Ok(e) => ev.extend(e),
                Err(e) => return (merge_bodies(ev), Some(e)),
            }
            (merge_bodies(ev), None)
        };
        let whole = run(&mut std::iter::once(data));
        for cut in 0..=data.len() {
            let got = run(&mut [&data[..cut], &data[cut..]].into_iter());
            assert_eq!(got, whole, "cut at {cut} of {:?}", String::from_utf8_lossy(data));
        }
        assert_eq!(run(&mut data.chunks(1)), whole, "bytewise {:?}", String::from_utf8_lossy(data));
        whole
    }

    /// What endpoints parse although it is irregular is parsed, handed on and flagged, the
    /// same wherever the stream is cut.
    #[test]
    fn tolerated_irregularities_are_parsed_and_flagged() {
        use Anomaly::*;
        let bits = |a: &[Anomaly]| a.iter().fold(0u16, |b, a| b | a.bit());
        type Case<'a> = (&'a [u8], &'a [Anomaly], (&'a str, &'a str, &'a str));
        let cases: &[Case] = &[
            (
                b"GET /admin/login.php?user=admin' OR 1=1-- HTTP/1.1\r\nHost: x\r\n\r\n",
                &[RequestTargetSpaces],
                ("GET", "/admin/login.php?user=admin' OR 1=1--", "HTTP/1.1"),
            ),
            (b"GET /a\tb  HTTP/1.1\r\n\r\n", &[RequestTargetSpaces, RequestLineWhitespace], ("GET", "/a\tb", "HTTP/1.1")),
            (b"GET /x\r\n", &[Http09Request], ("GET", "/x", "")),
            (b"GET /x\n", &[Http09Request, BareLf], ("GET", "/x", "")),
            (b"GET / http/1.1\r\n\r\n", &[LowercaseVersion], ("GET", "/", "http/1.1")),
            (b"GET  /\tHTTP/1.0\r\n\r\n", &[RequestLineWhitespace], ("GET", "/", "HTTP/1.0")),
            (b" GET / HTTP/1.1 \r\n\r\n", &[RequestLineWhitespace], ("GET", "/", "HTTP/1.1")),
            (b"GET /a\x01b\x7f HTTP/1.1\r\n\r\n", &[RequestTargetControl], ("GET", "/a\x01b\x7f", "HTTP/1.1")),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", &[ObsFold], ("GET", "/", "HTTP/1.1")),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", &[BareLf], ("GET", "/", "HTTP/1.1")),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", &[BareLf], ("GET", "/", "HTTP/1.1")),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", &[BareLf], ("GET", "/", "HTTP/1.1")),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
                &[DuplicateContentLength],
                ("POST", "/", "HTTP/1.1"),
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok", &[DuplicateContentLength], ("POST", "/", "HTTP/1.1")),
            (b"GET / HTTP/1.1\r\nHost : x\r\nA\t: b\r\n\r\n", &[SpaceBeforeColon], ("GET", "/", "HTTP/1.1")),
            // regular: absolute form, odd-case names, a method of any case
            (b"get http://h.example/p?q HTTP/1.1\r\nhOsT: h\r\n\r\n", &[], ("get", "http://h.example/p?q", "HTTP/1.1")),
        ];
        for &(data, expect, (m, u, v)) in cases {
            let what = String::from_utf8_lossy(data);
            let raw = || {
                let mut p = HttpParser::request();
                p.set_raw_heads(true);
                p
            };
            let (ev, err) = same_at_every_split(&raw, data);
            assert_eq!(err, None, "{what}");
            let HttpEvent::Head(h) = &ev[0] else { panic!("{what}: {ev:?}") };
            assert_eq!(h.info.anomalies, bits(expect), "{what}");
            assert_eq!(Anomaly::of(h.info.anomalies).collect::<Vec<_>>(), expect, "{what}");
            // the parsed request: the same parts, the head byte-identical
            let (ev, err) = same_at_every_split(&HttpParser::request, data);
            assert_eq!(err, None, "{what}");
            let r = req(&ev[0]);
            assert_eq!((r.method.as_str(), r.uri.as_str(), r.version.as_str()), (m, u, v), "{what}");
            assert_eq!(r.to_bytes(), h.bytes, "{what}");
            assert_eq!(h.parse(usize::MAX, false).unwrap(), ev[0], "{what}");
            assert_eq!(String::from_utf8_lossy(h.part(1)), u, "{what}");
        }
        // `Host : x` is found under its name, and rewritten without the blank
        let h = RawHead::scan(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n".to_vec(), true).unwrap();
        let f = find_field(&h.bytes, h.info.fields_start, b"host").unwrap();
        assert_eq!(&h.bytes[f.value.0..f.value.1], b"x");
        assert!(!h.info.canonical);
        let mut out = Vec::new();
        let set = FieldSet { name: b"host".to_vec(), value: Some(b"y".to_vec()) };
        assert!(set_fields(&h, [&set].into_iter(), &mut out));
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: y\r\n\r\n");
        let mut p = HttpParser::request();
        let ev = feed_all(&mut p, b"GET / HTTP/1.1\r\nHost : x\r\n\r\n");
        assert_eq!(req(&ev[0]).headers.get("host"), Some("x"));
    }

    /// An HTTP/0.9 exchange: the request is its line, what follows it a request body until
    /// close; the answer, without a status line, a response body until close (a server
    /// refusing HTTP/0.9 answers with a status line: parsed as one). No error either way.
    #[test]
    fn haka_errors_when_configured_http09_and_truncated_heads() {
        // HTTP/0.9 refused: the line is an error, named as Haka's grammar did
        let mut p = HttpParser::request();
        p.set_refuse_http09(true);
        assert_eq!(p.feed(b"GET /x\r\n"), Err(HttpError::BadRequestLine));
        assert_eq!(HttpError::BadRequestLine.haka_alert(false), "invalid http request_line");
        assert_eq!(HttpError::BadVersion.haka_alert(false), "invalid http version");
        // a head cut by the end of the stream: where it was cut
        for (data, e) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\n"[..], HttpError::BadHeader),
            (b"GET / HTT", HttpError::BadRequestLine),
        ] {
            let mut p = HttpParser::request();
            assert_eq!(p.feed(data).map(|v| v.len()), Ok(0));
            assert_eq!(p.clone().feed_eof(), Err(HttpError::Truncated), "default");
            p.set_truncated_head_error(true);
            assert_eq!(p.feed_eof(), Err(e));
        }
        let mut p = HttpParser::response();
        p.set_truncated_head_error(true);
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n").map(|v| v.len()), Ok(0));
        assert_eq!(p.feed_eof(), Err(HttpError::BadHeader));
        // nothing but empty lines: not a head
        let mut p = HttpParser::request();
        p.set_truncated_head_error(true);
        assert_eq!(p.feed(b"\r\n").map(|v| v.len()), Ok(0));
        assert_eq!(p.feed_eof().map(|v| v.len()), Ok(0));
    }

    /// `[http] binary_header = "accept"`: a NUL in a value is part of it, on the raw-head
    /// path the dissector uses and on the parsed one, in an obs-fold line and a trailer too;
    /// a CR inside a value stays an error (Haka's grammar ended the value there).
    #[test]
    fn nul_in_header_values_when_accepted() {
        let head = b"GET / HTTP/1.1\r\nHost: \x04\x8e\x00\x11\xef\r\nX: a\r\n \x00b\r\n\r\n";
        for raw in [false, true] {
            let mut p = HttpParser::request();
            p.set_raw_heads(raw);
            assert_eq!(p.feed(head).map(|v| v.len()), Err(HttpError::BadHeader), "default, raw {raw}");
            let mut p = HttpParser::request();
            p.set_raw_heads(raw);
            p.set_nul_in_values(true);
            let ev = p.feed(head).unwrap_or_else(|e| panic!("raw {raw}: {e:?}"));
            let req = match &ev[0] {
                HttpEvent::Head(h) => {
                    assert!(h.bytes.windows(3).any(|w| w == b"\x8e\x00\x11"));
                    h.parse(usize::MAX, true).unwrap()
                }
                e => e.clone(),
            };
            let HttpEvent::Request(r) = req else { panic!("{req:?}") };
            assert_eq!(r.headers.get("Host"), Some("\u{4}\u{fffd}\u{0}\u{11}\u{fffd}"), "raw {raw}");
            assert_eq!(r.headers.get("X"), Some("a \u{0}b"), "raw {raw}");
            let mut p = HttpParser::request();
            p.set_raw_heads(raw);
            p.set_nul_in_values(true);
            assert_eq!(p.feed(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n").map(|v| v.len()), Err(HttpError::BadHeader));
        }
        let mut p = HttpParser::request();
        p.set_nul_in_values(true);
        let ev = p.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: \x00\r\n\r\n").unwrap();
        assert!(ev.iter().any(|e| matches!(e, HttpEvent::Trailers(t) if t.get("T") == Some("\u{0}"))), "{ev:?}");
    }

    #[test]
    fn http09_exchange_is_parsed_without_error() {
        let raw = || {
            let mut p = HttpParser::request();
            p.set_raw_heads(true);
            p
        };
        let (ev, err) = same_at_every_split(&raw, b"GET /x\r\nHost: y\r\n\r\n");
        assert_eq!(err, None);
        match &ev[..] {
            [HttpEvent::Head(h), HttpEvent::Body(b), HttpEvent::MessageEnd] => {
                assert_eq!((h.bytes.as_slice(), h.info.fields_start, h.part(2)), (&b"GET /x\r\n"[..], 8, &b""[..]));
                assert_eq!(b, b"Host: y\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
        let resp = || {
            let mut p = HttpParser::response();
            p.expect_http09_response();
            p
        };
        let (ev, err) = same_at_every_split(&resp, b"<html>\r\nHTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(err, None);
        assert_eq!(ev, [HttpEvent::Body(b"<html>\r\nHTTP/1.1 200 OK\r\n\r\n".to_vec()), HttpEvent::MessageEnd]);
        let (ev, err) = same_at_every_split(&resp, b"\r\nhi");
        assert_eq!((ev, err), (vec![HttpEvent::Body(b"\r\nhi".to_vec()), HttpEvent::MessageEnd], None));
        let (ev, err) = same_at_every_split(&resp, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno");
        assert_eq!(err, None);
        assert_eq!(resp_of(&ev[0]).status, 400);
        assert_eq!(ev[1..], [HttpEvent::Body(b"no".to_vec()), HttpEvent::MessageEnd]);
        // a modified HTTP/0.9 request is written without a version
        let mut p = HttpParser::request();
        let mut r = req(&feed_all(&mut p, b"GET /x\r\n")[0]).clone();
        assert_eq!(r.to_bytes(), b"GET /x\r\n");
        r.uri = "/y".into();
        assert_eq!(r.to_bytes(), b"GET /y\r\n");
        // a body longer than the head limit right after the line
        let mut long = b"GET /x\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'a', 100));
        long.extend_from_slice(b"\n\n");
        let mk = || HttpParser::request_with_limits(Limits { max_head: 16, ..Limits::default() });
        let (ev, err) = same_at_every_split(&mk, &long);
        assert_eq!((ev.len(), err), (3, None), "{ev:?}");
        // a request line too long for the limit, with or without a version
        for line in [&b"GET /aaaaaaaaaaaaaaaaaaaa\r\n"[..], b"GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n"] {
            let mk = || HttpParser::request_with_limits(Limits { max_head: 16, ..Limits::default() });
            assert_eq!(same_at_every_split(&mk, line).1, Some(HttpError::HeadTooLong));
        }
    }

    #[test]
    fn blank_or_control_found_in_any_byte() {
        for len in 0..20 {
            for at in 0..len {
                for c in (0u8..=0x21).chain([0x7e, 0x7f, 0x80, 0xff]) {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    assert_eq!(has_blank_or_control(&b), c <= b' ' || c == 0x7f, "{len} {at} {c:#x}");
                }
            }
            assert!(!has_blank_or_control(&vec![0xa0; len]));
        }
    }

    fn resp_of(e: &HttpEvent) -> Response {
        match e {
            HttpEvent::Head(h) => match h.parse(usize::MAX, false) {
                Ok(HttpEvent::Response(r)) => *r,
                other => panic!("{other:?}"),
            },
            e => resp(e).clone(),
        }
    }

    /// TCP payload streams of a capture, per direction (in order of first appearance), reassembled by
    /// sequence number (retransmitted bytes dropped). Ethernet, raw IPv4 and `LINKTYPE_IPV4` link types.
    fn tcp_streams(path: &str) -> Vec<((u16, u16), Vec<u8>)> {
        use crate::pcapfile::{Capture, LINKTYPE_ETHERNET};
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/haka-pcaps").join(path);
        let cap = Capture::read(&p).unwrap();
        let base = if cap.link_type == LINKTYPE_ETHERNET { 14 } else { 0 };
        type Dir = ((u16, u16), Option<u32>, Vec<u8>);
        let mut dirs: Vec<Dir> = Vec::new();
        for f in &cap.packets {
            let Some(ip) = f.get(base..) else { continue };
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
                continue;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let tl = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
            let Some(t) = ip.get(ihl..tl) else { continue };
            if t.len() < 20 {
                continue;
            }
            let key = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
            let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            let doff = (t[12] >> 4) as usize * 4;
            let i = match dirs.iter().position(|d| d.0 == key) {
                Some(i) => i,
                None => {
                    dirs.push((key, None, Vec::new()));
                    dirs.len() - 1
                }
            };
            let d = &mut dirs[i];
            if t[13] & 0x02 != 0 {
                d.1 = Some(seq.wrapping_add(1));
                continue;
            }
            let pl = t.get(doff..).unwrap_or(&[]);
            if pl.is_empty() {
                continue;
            }
            let isn = *d.1.get_or_insert(seq);
            let rel = seq.wrapping_sub(isn) as usize;
            if rel <= d.2.len() && rel + pl.len() > d.2.len() {
                let skip = d.2.len() - rel;
                d.2.extend_from_slice(&pl[skip..]);
            }
        }
        dirs.into_iter().map(|(k, _, b)| (k, b)).collect()
    }

    type Parsed = (Vec<HttpEvent>, Vec<HttpEvent>, Option<HttpError>, Option<HttpError>);

    /// Parses both directions of one connection, feeding the response parser the request methods.
    /// Returns (request events, response events, request error, response error).
    fn parse_connection(client: &[u8], server: &[u8]) -> Parsed {
        let mut rq = HttpParser::request();
        let mut reqs = Vec::new();
        let e1 = rq.feed(client).and_then(|v| {
            reqs.extend(v);
            rq.feed_eof()
        });
        let e1 = e1.map(|v| reqs.extend(v)).err();
        let mut rs = HttpParser::response();
        for e in &reqs {
            match e {
                HttpEvent::Request(r) if r.version.is_empty() => rs.expect_http09_response(),
                HttpEvent::Request(r) => rs.expect_response_to(&r.method),
                _ => {}
            }
        }
        let mut resps = Vec::new();
        let e2 = rs.feed(server).and_then(|v| {
            resps.extend(v);
            rs.feed_eof()
        });
        let e2 = e2.map(|v| resps.extend(v)).err();
        (reqs, merge_bodies(resps), e1, e2)
    }

    /// Every connection (client port, parsed) of a capture; the server is port 80.
    fn parse_capture_all(path: &str) -> Vec<(u16, Parsed)> {
        let streams = tcp_streams(path);
        streams
            .iter()
            .filter(|s| s.0 .1 == 80)
            .map(|c| {
                let server = streams.iter().find(|s| s.0 == (80, c.0 .0)).map(|s| s.1.as_slice()).unwrap_or(&[]);
                (c.0 .0, parse_connection(&c.1, server))
            })
            .collect()
    }

    /// The first connection of a capture.
    fn parse_capture(path: &str) -> Parsed {
        parse_capture_all(path).into_iter().next().map(|c| c.1).unwrap_or_default()
    }

    #[test]
    fn pcap_request_response() {
        let (reqs, resps, e1, e2) = parse_capture("modules/protocol/http/test/request-response.pcap");
        assert_eq!((e1, e2), (None, None));
        assert_eq!(reqs.len(), 2);
        let r = req(&reqs[0]);
        assert_eq!((r.method.as_str(), r.uri.as_str(), r.version.as_str()), ("GET", "/", "HTTP/1.1"));
        assert_eq!(r.headers.get("user-agent"), Some("Wget/1.13.4 (linux-gnu)"));
        assert_eq!(r.headers.get("HOST"), Some("10.2.104.129"));
        assert_eq!(r.headers.len(), 4);
        assert_eq!(resps.len(), 3, "{resps:?}");
        let s = resp(&resps[0]);
        assert_eq!((s.version.as_str(), s.status, s.reason.as_str()), ("HTTP/1.1", 200, "OK"));
        assert_eq!(s.headers.get("transfer-encoding"), Some("chunked"));
        assert_eq!(s.headers.get("Server"), Some("Apache/2.2.8 (Ubuntu) DAV/2"));
        match &resps[1] {
            HttpEvent::Body(b) => {
                assert_eq!(b.len(), 0x37b);
                assert!(b.starts_with(b"<html><head><title>Metasploitable2 - Linux</title>"));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(resps[2], HttpEvent::MessageEnd);
    }

    #[test]
    fn pcap_keepalive_and_split() {
        for (path, n) in
            [("modules/protocol/http/test/keepalive.pcap", 0), ("modules/protocol/http/test/split-request.pcap", 1)]
        {
            let streams = tcp_streams(path);
            let (reqs, resps, e1, e2) = parse_capture(path);
            assert_eq!((e1, e2), (None, None), "{path}");
            let nreq = reqs.iter().filter(|e| matches!(e, HttpEvent::Request(_))).count();
            let nresp = resps.iter().filter(|e| matches!(e, HttpEvent::Response(_))).count();
            assert_eq!(nreq, nresp, "{path}");
            assert!(nreq >= n.max(1), "{path}");
            // Unmodified heads (and bodies, for requests without bodies) re-serialise byte for byte.
            let client: Vec<u8> = streams.iter().filter(|s| s.0 .1 == 80).flat_map(|s| s.1.clone()).collect();
            let rebuilt: Vec<u8> = reqs
                .iter()
                .flat_map(|e| match e {
                    HttpEvent::Request(r) => r.to_bytes(),
                    HttpEvent::Body(b) => b.clone(),
                    _ => Vec::new(),
                })
                .collect();
            assert_eq!(rebuilt, client, "{path}");
        }
    }

    #[test]
    fn pcap_variations() {
        let conns = parse_capture_all("modules/protocol/http/test/variation_http.pcap");
        assert_eq!(conns.len(), 9);
        let ok: Vec<u16> = conns.iter().filter(|c| c.1 .2.is_none()).map(|c| c.0).collect();
        // Accepted: plain bare-LF request, tab/space runs, the HTTP/0.9 request `GET /`, obs-fold,
        // unknown method, `GET%` (a valid token).
        assert_eq!(ok, [33982, 33983, 33985, 33986, 33987, 33988]);
        let folded = req(&conns[4].1 .0[0]);
        assert_eq!(
            folded.headers.get("long_header"),
            Some("This is just a relatively long header folded on two lines")
        );
        assert_eq!(req(&conns[1].1 .0[0]).method, "GET");
        // `GET / HTML/1.1` (a version that is not one) is rejected.
        assert_eq!(conns[2].1 .2, Some(HttpError::BadVersion));
        // The HTTP/0.9 request (no version): the head is its line, the lines after it are
        // a body until close; Apache's answer (no status line) is a body until close.
        let (reqs, resps, _, e2) = &conns[3].1;
        let r = req(&reqs[0]);
        assert_eq!((r.method.as_str(), r.uri.as_str(), r.version.as_str()), ("GET", "/", ""));
        assert_eq!(r.to_bytes(), b"GET /\n");
        assert!(matches!(&reqs[1], HttpEvent::Body(b) if b.starts_with(b"Host: server\n")));
        assert_eq!(*e2, None);
        assert!(matches!(&resps[..], [HttpEvent::Body(b), HttpEvent::MessageEnd] if b.starts_with(b"<html>")), "{resps:?}");
        let (_, _, e1, _) = parse_capture("modules/protocol/http/test/nullbytes.pcap");
        assert_eq!(e1, Some(HttpError::BadRequestLine));
    }

    /// Every HTTP capture of the Haka test suite: no panic, and report what happens.
    #[test]
    fn pcap_all_http_no_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/haka-pcaps/modules/protocol/http/test");
        let Ok(rd) = std::fs::read_dir(&dir) else { return };
        let mut names: Vec<String> = rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        names.sort();
        for n in names.iter().filter(|n| n.ends_with(".pcap")) {
            for (port, (reqs, resps, e1, e2)) in parse_capture_all(&format!("modules/protocol/http/test/{n}")) {
                eprintln!("{n} {port}: {} req events {e1:?}, {} resp events {e2:?}", reqs.len(), resps.len());
            }
        }
    }

    #[test]
    fn long_lines_byte_by_byte_are_linear() {
        // A 60 KiB URI then 200 headers, one byte per feed: must not rescan the buffered head each time.
        let mut data = b"GET /".to_vec();
        data.extend(std::iter::repeat_n(b'a', 60 * 1024));
        data.extend_from_slice(b" HTTP/1.1\r\n");
        for i in 0..200 {
            data.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        let mut p = HttpParser::request_with_limits(Limits { max_head: 128 * 1024, ..Limits::default() });
        let t = std::time::Instant::now();
        let ev = feed_bytes(&mut p, &data).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(req(&ev[0]).uri.len(), 60 * 1024 + 1);
        assert_eq!(req(&ev[0]).to_bytes(), data);
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn fuzz_no_panic() {
        let seeds: [&[u8]; 5] = [
            GET,
            CHUNKED,
            b"POST /a?b=c HTTP/1.0\r\nContent-Length: 4\r\nCookie: a=b\r\n\r\nbodyGET / HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.0 404 Nope\r\n\r\ntail",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\nT: 1\r\n\r\n",
        ];
        let tokens: [&[u8]; 10] = [
            b"\r\n",
            b"\n",
            b"\x00",
            b":",
            b" ",
            b"chunked",
            b"Content-Length: ",
            b"ffffffffffffffff",
            b";",
            b"\r\n\r\n",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let limits = Limits { max_head: 512, max_headers: 8, max_chunk_line: 32 };
        for i in 0..50_000 {
            let mut d = seeds[rng.below(seeds.len())].to_vec();
            for _ in 0..=rng.below(8) {
                let pos = rng.below(d.len() + 1);
                match rng.below(5) {
                    0 if pos < d.len() => d[pos] = rng.next() as u8,
                    1 if pos < d.len() => {
                        d.remove(pos);
                    }
                    2 => d.insert(pos, rng.next() as u8),
                    3 => {
                        let t = tokens[rng.below(tokens.len())];
                        d.splice(pos..pos, t.iter().copied());
                    }
                    _ => {
                        let n = rng.below(64);
                        d.splice(pos..pos, (0..n).map(|_| rng.next() as u8));
                    }
                }
            }
            let method = ["GET", "HEAD", "CONNECT"][rng.below(3)];
            let mk = || {
                if i % 2 == 0 {
                    HttpParser::request_with_limits(limits)
                } else {
                    let mut p = HttpParser::response_with_limits(limits);
                    p.expect_response_to(method);
                    p
                }
            };
            // Random chunks.
            let mut p = mk();
            let mut off = 0;
            let mut chunked = Vec::new();
            let mut chunked_err = None;
            while off < d.len() {
                let n = 1 + rng.below(d.len() - off);
                match p.feed(&d[off..off + n]) {
                    Ok(ev) => {
                        for e in &ev {
                            match e {
                                HttpEvent::Request(r) => {
                                    let _ = (r.to_bytes(), r.split_uri(), normalize_uri(&r.uri), r.split_cookies());
                                }
                                HttpEvent::Response(r) => {
                                    let _ = (r.to_bytes(), r.split_cookies());
                                }
                                _ => {}
                            }
                        }
                        chunked.extend(ev);
                    }
                    Err(e) => {
                        chunked_err = Some(e);
                        break;
                    }
                }
                off += n;
            }
            assert!(p.buffered() <= 2 * 512 + 64, "buffer bounded");
            match p.feed_eof() {
                Ok(ev) => chunked.extend(ev),
                Err(e) => chunked_err = chunked_err.or(Some(e)),
            }
            // Whole buffer at once: same outcome (incremental parsing does not depend on segmentation).
            let mut w = mk();
            let whole = w.feed(&d).and_then(|mut ev| {
                ev.extend(w.feed_eof()?);
                Ok(ev)
            });
            match (whole, chunked_err) {
                (Ok(ev), None) => assert_eq!(merge_bodies(ev), merge_bodies(chunked), "input {d:?}"),
                (Err(a), Some(b)) => assert_eq!(a, b, "input {d:?}"),
                (a, b) => panic!("whole {a:?} vs chunked {b:?} on {d:?}"),
            }
            // Helpers on raw garbage.
            let s = String::from_utf8_lossy(&d);
            let _ = (split_uri(&s), normalize_uri(&s), split_cookies(&s));
        }
    }

    #[test]
    fn uri_split_and_normalize() {
        let u = split_uri("HTTP://user:pw@Www.Example.COM:8080/a/b/../c?x=1&y=a%20b+c&flag#frag");
        assert_eq!(u.scheme.as_deref(), Some("HTTP"));
        assert_eq!(u.authority.as_deref(), Some("user:pw@Www.Example.COM:8080"));
        assert_eq!(u.userinfo.as_deref(), Some("user:pw"));
        assert_eq!((u.user.as_deref(), u.pass.as_deref()), (Some("user"), Some("pw")));
        assert_eq!(u.host.as_deref(), Some("Www.Example.COM"));
        assert_eq!(u.port.as_deref(), Some("8080"));
        assert_eq!(u.path.as_deref(), Some("/a/b/../c"));
        assert_eq!(u.query.as_deref(), Some("x=1&y=a%20b+c&flag"));
        // arguments as written (Haka does not decode them); a name without `=` has ""
        let args = |v: &[(&str, &str)]| Some(v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
        assert_eq!(u.args, args(&[("x", "1"), ("y", "a%20b+c"), ("flag", "")]));
        assert_eq!(u.fragment.as_deref(), Some("frag"));
        // Haka's tostring: query rebuilt from the arguments
        assert_eq!(u.to_uri(), "HTTP://user:pw@Www.Example.COM:8080/a/b/../c?x=1&y=a%20b+c&flag=#frag");
        let o = split_uri("/index.php?id=1");
        assert_eq!((o.scheme, o.authority, o.host, o.path.as_deref()), (None, None, None, Some("/index.php")));
        let v6 = split_uri("http://[::1]:81/");
        assert_eq!((v6.host.as_deref(), v6.port.as_deref()), (Some("[::1]"), Some("81")));
        let v6 = split_uri("http://[::1]/");
        assert_eq!((v6.host.as_deref(), v6.port), (Some("[::1]"), None));
    }

    #[test]
    fn uri_split_haka_rules() {
        // absent and empty components are None; args only with a query
        let p = split_uri("https://h.example/");
        assert_eq!((p.query, p.args, p.fragment, p.path.as_deref()), (None, None, None, Some("/")));
        let p = split_uri("http://h.example?#");
        assert_eq!((p.path, p.query, p.args, p.fragment), (None, None, None, None));
        assert_eq!(split_uri(""), UriParts::default());
        // a scheme-less host/path has an authority
        let p = split_uri("h.example:8000/x");
        assert_eq!((p.scheme, p.host.as_deref(), p.port.as_deref()), (None, Some("h.example"), Some("8000")));
        assert_eq!(p.authority.as_deref(), Some("h.example:8000"));
        // the scheme is letters then `://`; `://` alone is dropped; `mailto:` is no scheme
        assert_eq!(split_uri("svn+ssh://h/").scheme, None);
        assert_eq!(split_uri("svn+ssh://h/").host.as_deref(), Some("svn+ssh:"));
        let p = split_uri("://h/p");
        assert_eq!((p.scheme, p.host.as_deref(), p.path.as_deref()), (None, Some("h"), Some("/p")));
        let p = split_uri("mailto:a@b");
        assert_eq!((p.scheme, p.userinfo.as_deref(), p.host.as_deref()), (None, Some("mailto:a"), Some("b")));
        // several `?` / `#` separators are skipped; later ones stay in the query / fragment
        let p = split_uri("/p??a=1?b=2##f#g");
        assert_eq!((p.query.as_deref(), p.fragment.as_deref()), (Some("a=1?b=2"), Some("f#g")));
        assert_eq!(p.args.unwrap(), [("a".into(), "1".into()), ("?b".into(), "2".into())]);
        // repeated names: the last value, at the first place; leading `=` skipped
        let p = split_uri("/?a=1&b=2&a=3&=x&c==d");
        let want: Vec<(String, String)> =
            [("a", "3"), ("b", "2"), ("x", ""), ("c", "=d")].iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(p.args.unwrap(), want);
        // userinfo up to the first `@`, user:pass at its last `:`, no user when it is empty
        let p = split_uri("http://a:b:c@d@h/");
        assert_eq!((p.userinfo.as_deref(), p.user.as_deref(), p.pass.as_deref()), (Some("a:b:c"), Some("a:b"), Some("c")));
        assert_eq!(p.host.as_deref(), Some("d@h"));
        let p = split_uri("http://:pw@h/");
        assert_eq!((p.userinfo.as_deref(), p.user, p.pass), (Some(":pw"), None, None));
        let p = split_uri("http://me@h/");
        assert_eq!((p.userinfo.as_deref(), p.user.as_deref(), p.pass.as_deref()), (Some("me"), None, None));
        assert_eq!(p.to_uri(), "http://h/", "a userinfo without password is not written back");
        // the port: `:`, a byte other than `:`, digits, at the end
        assert_eq!(split_uri("http://h:8/").port, None);
        assert_eq!(split_uri("http://h:8/").host.as_deref(), Some("h:8"));
        assert_eq!(split_uri("http://h:x80/").port.as_deref(), Some("x80"));
        assert_eq!(split_uri("http://h:80a/").port, None);
        assert_eq!(split_uri("http://[::12]/").port, None);
        // tostring: no scheme without a host; no `?` without arguments
        let p = split_uri("http:///p?=");
        assert_eq!((p.host.as_deref(), p.query.as_deref()), (None, Some("=")));
        assert_eq!(p.to_uri(), "/p");
    }

    #[test]
    fn uri_normalize_haka_rules() {
        // case: scheme and host lower-cased, not the path nor the user
        assert_eq!(normalize_uri("hTTp://Us:Pw@WWW.Example.ORG/A/b"), "http://Us:Pw@www.example.org/A/b");
        // unreserved escapes decoded (everywhere), the others upper-cased
        assert_eq!(normalize_uri("http://h/%7e%41%2d/?k=%2f%5a#%61%3a"), "http://h/~A-/?k=%2FZ#a%3A");
        assert_eq!(normalize_uri("/%"), "/%");
        assert_eq!(normalize_uri("/%4"), "/%4");
        assert_eq!(normalize_uri("/%zz%4"), "/%zz%4");
        // argument names are not decoded, values are
        assert_eq!(normalize_uri("/p?%7e=%7e"), "/p?%7e=~");
        // dot segments, including decoded ones, never above the root
        assert_eq!(normalize_uri("/a/b/c/./../../g"), "/a/g");
        assert_eq!(normalize_uri("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_uri("/a/%2E%2e/b/%2e"), "/b/");
        assert_eq!(normalize_uri("/a/.."), "/");
        assert_eq!(normalize_uri("/a/b/."), "/a/b/");
        assert_eq!(normalize_uri("/x../.y/.../a"), "/x../.y/.../a");
        assert_eq!(normalize_uri("//a//b"), "//a//b");
        assert_eq!(normalize_uri("a/../b"), "http://a/b", "`a` is the authority");
        // relative paths (a split uri whose path a rule set)
        assert_eq!(remove_dot_segments("a/../b"), "b");
        assert_eq!(remove_dot_segments("../.././a/./b/.."), "a/");
        // `http` added when there is an authority but no scheme
        assert_eq!(normalize_uri("h.example/p"), "http://h.example/p");
        assert_eq!(normalize_uri("h.example"), "http://h.example/");
        // port 80 dropped whatever the scheme; 443 kept
        assert_eq!(normalize_uri("http://h:80"), "http://h/");
        assert_eq!(normalize_uri("https://h:80/x"), "https://h/x");
        assert_eq!(normalize_uri("https://h:443/x"), "https://h:443/x");
        assert_eq!(normalize_uri("https://h"), "https://h", "`/` is added for http only");
        // degenerate input gives Haka's results, never a panic
        assert_eq!(normalize_uri(""), "");
        assert_eq!(normalize_uri("#"), "");
        assert_eq!(normalize_uri("://"), "");
        assert_eq!(normalize_uri(":@"), "/");
        assert_eq!(normalize_uri("http:///"), "/");
        assert_eq!(normalize_uri("http://http://"), "http://http://");
        // the query is rebuilt from the arguments
        assert_eq!(normalize_uri("/p?a&b=1&a=2"), "/p?a=2&b=1");
    }

    #[test]
    fn cookies() {
        assert_eq!(
            split_cookies("SID=31d4d96e407aad42; Path=/; Secure; HttpOnly; lang=en-US"),
            vec![
                ("SID".into(), "31d4d96e407aad42".into()),
                ("Path".into(), "/".into()),
                ("Secure".into(), String::new()),
                ("HttpOnly".into(), String::new()),
                ("lang".into(), "en-US".into()),
            ]
        );
        assert_eq!(split_cookies(" ; ;a=b=c"), vec![("a".into(), "b=c".into())]);
        assert!(split_cookies("").is_empty());
    }

    /// Raw heads (the datapath's mode) frame messages exactly as parsed heads do, locate
    /// the start line's parts, flag canonical and obs-fold heads, and parse to the same
    /// Request/Response.
    /// A parser reset after any use (mid-head, mid-body, failed, with pending methods and
    /// recycled head buffers of other sizes) then gives what a new parser gives.
    #[test]
    fn reset_parser_and_recycled_heads_behave_like_new_ones() {
        let feed_all = |p: &mut HttpParser, data: &[u8]| -> (Vec<HttpEvent>, Option<HttpError>) {
            let mut out = Vec::new();
            for c in data.chunks(7) {
                if let Err(e) = p.feed_into(c, &mut out) {
                    return (out, Some(e));
                }
            }
            (out, None)
        };
        let uses: &[&[u8]] = &[
            b"GET /long/uri/that/takes/room?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Pad: 0123456789\r\n\r\nGET /b HT",
            b"POST /p HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
            b"\x00\x01 garbage",
            b"\r\n\r\n",
        ];
        let next: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD /x HTTP/1.0\r\nA: b\r\n\r\n";
        for used in uses {
            for raw in [true, false] {
                let mut p = HttpParser::request();
                p.set_raw_heads(raw);
                let (events, _) = feed_all(&mut p, used);
                for e in events {
                    if let HttpEvent::Head(h) = e {
                        p.recycle_head(h.bytes);
                    }
                }
                p.recycle_head(b"stale bytes of a much longer head that was handed back".to_vec());
                p.reset();
                let mut fresh = HttpParser::request();
                fresh.set_raw_heads(raw);
                assert_eq!(feed_all(&mut p, next), feed_all(&mut fresh, next), "after {:?}", String::from_utf8_lossy(used));
            }
        }
        // a response parser forgets the methods of the requests it was waiting for
        let mut p = HttpParser::response();
        p.expect_response_to("HEAD");
        p.reset();
        let mut fresh = HttpParser::response();
        p.expect_response_to("GET");
        fresh.expect_response_to("GET");
        let resp: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(feed_all(&mut p, resp), feed_all(&mut fresh, resp));
    }

    #[test]
    fn raw_heads_frame_and_locate_like_parsed_heads() {
        let reqs: &[&[u8]] = &[
            b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\nPOST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHEAD / HTTP/1.1\r\n\r\n",
            b"\r\nPOST  /x\tHTTP/1.0\nHost:h\nContent-Length:  2 , 2\nConnection: keep-alive\n\nxyGET / HTTP/1.0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nX-F: a\r\n b\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
        ];
        let resps: &[(&[u8], &[&str])] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204  No  Content \r\n\r\n", &["GET", "HEAD", "GET"]),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close", &["GET", "GET"]),
            (b"HTTP/1.1 200\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", &["GET", "GET"]),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &["GET"]),
            (b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03", &["CONNECT"]),
        ];
        let run = |raw: bool, data: &[u8], methods: Option<&[&str]>| -> (Vec<HttpEvent>, Option<HttpError>, Vec<RawHead>) {
            let mut p = if methods.is_some() { HttpParser::response() } else { HttpParser::request() };
            p.set_raw_heads(raw);
            for m in methods.unwrap_or(&[]) {
                p.expect_response_to(m);
            }
            let mut ev = Vec::new();
            let mut err = None;
            for b in data {
                match p.feed(std::slice::from_ref(b)) {
                    Ok(e) => ev.extend(e),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            let mut heads = Vec::new();
            let ev = merge_bodies(ev)
                .into_iter()
                .map(|e| match e {
                    HttpEvent::Head(h) => {
                        let parsed = h.parse(usize::MAX, false).expect("a raw head parses");
                        heads.push(h);
                        parsed
                    }
                    e => e,
                })
                .collect();
            (ev, err, heads)
        };
        let mut checked = 0;
        for (data, methods) in reqs.iter().map(|d| (*d, None)).chain(resps.iter().map(|(d, m)| (*d, Some(*m)))) {
            let (parsed, perr, _) = run(false, data, methods);
            let (raw, rerr, heads) = run(true, data, methods);
            assert_eq!(parsed, raw, "{}", String::from_utf8_lossy(data));
            assert_eq!(perr, rerr, "{}", String::from_utf8_lossy(data));
            for h in heads {
                let text = |i| String::from_utf8_lossy(h.part(i)).into_owned();
                match h.parse(usize::MAX, false) {
                    Ok(HttpEvent::Request(r)) => {
                        assert_eq!((text(0), text(1), text(2)), (r.method.clone(), r.uri.clone(), r.version.clone()));
                        assert_eq!(h.bytes, r.to_bytes());
                    }
                    Ok(HttpEvent::Response(r)) => {
                        assert_eq!((text(0), text(2)), (r.version.clone(), r.reason.clone()));
                        assert_eq!((text(1).parse::<u16>().unwrap(), h.info.status), (r.status, r.status));
                        assert_eq!(h.bytes, r.to_bytes());
                    }
                    other => panic!("{other:?}"),
                }
                let canonical = !h.info.obs_fold && h.bytes.windows(2).filter(|w| w[1] == b'\n' && w[0] != b'\r').count() == 0
                    && h.bytes[h.info.fields_start..].split(|&b| b == b'\n').all(|l| {
                        l.is_empty() || l == b"\r" || l.windows(2).position(|w| w == b": ").is_some_and(|i| {
                            l[..i].iter().all(|&c| c != b':') && !l[i + 2..l.len() - 1].ends_with(b" ") && !l[i + 2..].starts_with(b" ")
                        })
                    });
                assert_eq!(h.info.canonical, canonical, "{}", String::from_utf8_lossy(&h.bytes));
                checked += 1;
            }
        }
        assert!(checked >= 14, "{checked} heads checked");
        // obs-fold and a canonical head are told apart
        let h = RawHead::scan(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n".to_vec(), true).unwrap();
        assert!(h.info.obs_fold && !h.info.canonical);
        let h = RawHead::scan(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n".to_vec(), false).unwrap();
        assert!(h.info.canonical && h.part(2) == b"OK" && h.info.fields_start == 17);
        assert_eq!(RawHead::scan(b"GET / HTML/1.1\r\n\r\n".to_vec(), true).map(|_| ()), Err(HttpError::BadVersion));
    }


    #[test]
    fn set_fields_replaces_removes_and_appends_as_the_lua_headers_do() {
        let set = |n: &str, v: Option<&str>| FieldSet { name: n.as_bytes().to_vec(), value: v.map(|v| v.as_bytes().to_vec()) };
        let h = RawHead::scan(
            b"HTTP/1.1 200 OK\r\nserver:  nginx/1.2 \r\nX-A: 1\nSERVER: again\r\nX-Fold: a\r\n b\r\nX-B: 2\r\n\r\nbody?"
                .to_vec(),
            false,
        )
        .unwrap();
        let apply = |sets: &[FieldSet]| {
            let mut out = Vec::new();
            set_fields(&h, sets.iter(), &mut out).then(|| String::from_utf8(out).unwrap())
        };
        assert_eq!(
            apply(&[set("Server", Some("haka"))]).unwrap(),
            "HTTP/1.1 200 OK\r\nserver: haka\r\nX-A: 1\nX-Fold: a\r\n b\r\nX-B: 2\r\n\r\nbody?"
        );
        assert_eq!(
            apply(&[set("x-fold", None), set("X-New", Some("v")), set("x-a", Some("1b"))]).unwrap(),
            "HTTP/1.1 200 OK\r\nserver:  nginx/1.2 \r\nx-a: 1b\r\nSERVER: again\r\nX-B: 2\r\nX-New: v\r\n\r\nbody?"
                .replace("x-a: 1b", "X-A: 1b")
        );
        // the last set of a name wins; removing an absent field changes nothing
        assert_eq!(apply(&[set("X-B", Some("9")), set("x-b", Some("2"))]), None);
        assert!(apply(&[set("x-b", Some("2")), set("X-B", Some("9"))]).unwrap().contains("\r\nX-B: 9\r\n\r\n"));
        assert_eq!(apply(&[set("X-None", None)]), None);
        // as successive Lua assignments: a name appended keeps its place among the appended
        // ones and its first spelling; one removed then set again goes to the end
        assert!(apply(&[set("cookie", Some("1")), set("Via", Some("")), set("COOKIE", Some("12"))])
            .unwrap()
            .ends_with("\r\nX-B: 2\r\ncookie: 12\r\nVia: \r\n\r\nbody?"));
        assert!(apply(&[set("x-a", None), set("X-a", Some("3")), set("X-New", Some("v"))])
            .unwrap()
            .ends_with("\r\nX-B: 2\r\nX-a: 3\r\nX-New: v\r\n\r\nbody?"));
        // a head without fields
        let h = RawHead::scan(b"GET / HTTP/1.0\r\n\r\n".to_vec(), true).unwrap();
        let s = set("Via", Some("haka"));
        let mut out = b"left over".to_vec();
        assert!(set_fields(&h, [&s].into_iter(), &mut out));
        assert_eq!(out, b"GET / HTTP/1.0\r\nVia: haka\r\n\r\n");
        // the result is a valid head
        RawHead::scan(out, true).unwrap();
    }

    #[test]
    fn find_field_matches_whole_names_case_insensitively() {
        let h = b"GET / HTTP/1.1\r\nX-Host: a\r\nHost:  h \r\nA:b:c\nhost: second\r\n\r\nHost: body\r\n";
        let from = 16;
        let f = find_field(h, from, b"HOST").unwrap();
        assert_eq!(&h[f.value.0..f.value.1], b"h");
        assert_eq!((h[f.after_colon - 1], h[f.line_end]), (b':', b'\n'));
        let g = find_field(h, f.line_end + 1, b"host").unwrap();
        assert_eq!(&h[g.value.0..g.value.1], b"second");
        assert!(find_field(h, g.line_end + 1, b"host").is_none(), "stops at the empty line");
        let a = find_field(h, from, b"a").unwrap();
        assert_eq!(&h[a.value.0..a.value.1], b"b:c");
        assert!(find_field(h, from, b"x-hos").is_none() && find_field(h, from, b"").is_none());
        assert!(find_field(b"A: 1", 0, b"a").is_none(), "no line end: not a field");
        assert!(find_field(h, h.len(), b"host").is_none());
    }

}
