//! Haka's regexp module (`require("regexp/pcre")`) on PCRE2.
//!
//! * Patterns are Haka's: `%` stands for `\` (`%d`, `%s`, `%%` a literal `%`), compiled with
//!   PCRE's MULTILINE and, on request, CASELESS (`re.CASE_INSENSITIVE` = 1) and EXTENDED
//!   (`re.EXTENDED` = 2). Full PCRE syntax: backreferences, lookaround, octal escapes, lazy and
//!   possessive quantifiers, atomic groups... JIT compiled when the platform has it.
//! * `find` is PCRE's leftmost-first match on a string (Haka's `pcre_exec`).
//! * A [`Sink`] matches a stream fed chunk by chunk (Haka's `regexp_sink`, which used PCRE's
//!   partial matching): it keeps the bytes from the earliest position where a match may still
//!   start, searches them again with each new chunk (so a match may span any number of chunks,
//!   lookbehind sees up to [`CONTEXT`] bytes before), and reports PARTIAL when the data seen so
//!   far ends inside a possible match. Before the end of the stream a match that reaches the
//!   end of the data and could still grow (`fo+`, `foo$`, `foo\b`) is PARTIAL too, as PCRE's
//!   PARTIAL_HARD reported it.
//!
//! Whether a match may still start or grow is decided by a lazy DFA (regex-automata) built from
//! the same pattern when regex-syntax accepts it (no backreference, no lookaround). For the
//! other patterns the sink is conservative: it keeps the last [`FALLBACK_WINDOW`] bytes and
//! reports PARTIAL whenever it has kept data without a match.
//!
//! Nothing here panics on any pattern or input: errors are returned as strings.

use mlua::{UserData, UserDataMethods};
use pcre2::bytes::{Regex as Pcre, RegexBuilder};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson;
use regex_automata::{Anchored, Input};
use std::cell::RefCell;
use std::rc::Rc;

pub const CASE_INSENSITIVE: i64 = 1;
pub const EXTENDED: i64 = 2;

/// Sink states, as Haka's REGEXP_* codes.
pub const MATCH: i8 = 1;
pub const NOMATCH: i8 = 0;
pub const ERROR: i8 = -1;
pub const PARTIAL: i8 = -2;

/// Bytes kept before the search start (lookbehind, `^` and `\b` context).
pub const CONTEXT: usize = 256;
/// Bytes kept, without a match, for patterns without a DFA.
pub const FALLBACK_WINDOW: usize = 4096;
/// Most bytes a sink keeps for a pending partial match; beyond, the oldest are dropped.
pub const MAX_RETAIN: usize = 64 * 1024;

/// Haka's pattern -> PCRE pattern: `%` is `\` (the next byte is copied as is), bytes outside
/// printable ASCII are written `\x{HH}` so that any Lua string is a valid PCRE2 input.
pub fn translate(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len() + 8);
    let mut escaped = false; // the previous output char is an escaping backslash
    for &b in p {
        let c = if b == b'%' && !escaped { b'\\' } else { b };
        if !(0x20..0x7f).contains(&c) && c != b'\t' && c != b'\n' && c != b'\r' {
            if escaped {
                out.pop(); // `\<byte>` is the byte itself
            }
            out.push_str(&format!("\\x{{{c:02x}}}"));
            escaped = false;
            continue;
        }
        out.push(c as char);
        escaped = c == b'\\' && !escaped;
    }
    out
}

/// PCRE2's compile error as Haka worded it.
fn compile_error(e: &pcre2::Error) -> String {
    let s = e.to_string();
    // "PCRE2: error compiling pattern at offset N: MSG"
    let msg = match s.split_once(": ").and_then(|(_, r)| r.split_once(": ")) {
        Some((_, m)) => m.to_string(),
        None => s.clone(),
    };
    format!("PCRE compilation failed with error '{}' at offset {}", msg, e.offset().unwrap_or(0))
}

/// The lazy DFA that tells whether a match may still start or grow (see the module doc).
struct Grow {
    dfa: DFA,
    cache: RefCell<Cache>,
    /// longest match, when bounded: a partial match starts at most this far from the end
    max_len: Option<usize>,
}

impl Grow {
    fn build(pcre_pat: &str, opts: i64) -> Option<Grow> {
        // `\1`..`\9` are backreferences in PCRE, octal in regex-syntax: no DFA then
        let b = pcre_pat.as_bytes();
        if b.windows(2).any(|w| w[0] == b'\\' && (b'1'..=b'9').contains(&w[1])) {
            return None;
        }
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .octal(true)
            .multi_line(true)
            .case_insensitive(opts & CASE_INSENSITIVE != 0)
            .ignore_whitespace(opts & EXTENDED != 0)
            .nest_limit(200)
            .build()
            .parse(pcre_pat)
            .ok()?;
        let max_len = hir.properties().maximum_len();
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .utf8(false)
                    .which_captures(thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(4 << 20)),
            )
            .build_from_hir(&hir)
            .ok()?;
        let dfa = DFA::builder()
            .configure(DFA::config().cache_capacity(1 << 20).skip_cache_capacity_check(true))
            .build_from_nfa(nfa)
            .ok()?;
        let cache = RefCell::new(dfa.create_cache());
        Some(Grow { dfa, cache, max_len })
    }

    /// The state after an anchored run over hay[p..]; None: dead (no match can go on from p).
    /// Err: the DFA gave up (treated as "may go on").
    fn run(&self, cache: &mut Cache, hay: &[u8], p: usize) -> Result<Option<LazyStateID>, ()> {
        let input = Input::new(hay).range(p..).anchored(Anchored::Yes);
        let clears = cache.clear_count();
        let mut sid = self.dfa.start_state_forward(cache, &input).map_err(|_| ())?;
        for &b in &hay[p..] {
            sid = self.dfa.next_state(cache, sid, b).map_err(|_| ())?;
            // a cleared cache makes the state ids stale: give up (conservative)
            if cache.clear_count() != clears {
                return Err(());
            }
            if sid.is_tagged() {
                if sid.is_dead() {
                    return Ok(None);
                }
                if sid.is_quit() {
                    return Err(());
                }
            }
        }
        Ok(Some(sid))
    }

    /// Some text starting at hay[p..] (to its end) is the beginning of a match.
    fn alive(&self, hay: &[u8], p: usize) -> bool {
        let Ok(mut cache) = self.cache.try_borrow_mut() else { return true };
        !matches!(self.run(&mut cache, hay, p), Ok(None))
    }

    /// The match found at p that reaches the end of hay may change with more data: it could
    /// grow (`fo+`), or an assertion at its end needs the next byte (`foo$`, `foo\b`). With
    /// the DFA's matches delayed by one byte: final when every next byte gives a match state
    /// from which no byte goes on.
    fn may_grow(&self, hay: &[u8], p: usize) -> bool {
        let Ok(mut cache) = self.cache.try_borrow_mut() else { return true };
        let sid = match self.run(&mut cache, hay, p) {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(()) => return true,
        };
        let clears = cache.clear_count();
        let mut seen: Vec<LazyStateID> = Vec::new();
        for b in 0..=255u8 {
            let t = match self.dfa.next_state(&mut cache, sid, b) {
                Ok(t) if cache.clear_count() == clears => t,
                _ => return true,
            };
            if !t.is_match() {
                return true;
            }
            if seen.contains(&t) {
                continue;
            }
            seen.push(t);
            for b2 in 0..=255u8 {
                match self.dfa.next_state(&mut cache, t, b2) {
                    Ok(n) if n.is_dead() && cache.clear_count() == clears => {}
                    _ => return true,
                }
            }
        }
        false
    }
}

/// The `regex` crate gives the same matches as PCRE for this (translated) pattern: no
/// EXTENDED (x treats classes differently), and none of the constructs both accept with
/// different meanings: `\v` (PCRE: any vertical space), `\<` `\>` `\b{` (regex: word
/// assertions), `{,n}`, an inline `x` flag, and in a class a nested `[` or `&&` `--` `~~`
/// (regex: set operations). Everything else the `regex` crate accepts means the same in both
/// (ASCII classes, no Unicode); what it refuses (backreferences, lookaround, octal, possessive,
/// atomic groups, `\Z`, `\K`...) is left to PCRE.
fn fast_eligible(pat: &str, opts: i64) -> bool {
    if opts & EXTENDED != 0 {
        return false;
    }
    let b = pat.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            match b.get(i + 1) {
                Some(b'v' | b'<' | b'>' | b'Q' | b'E') => return false,
                Some(b'b' | b'B') if b.get(i + 2) == Some(&b'{') => return false,
                _ => {}
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                b']' => in_class = false,
                b'[' if b.get(i + 1) != Some(&b':') => return false,
                b'[' => {
                    // [:name:]
                    match b[i + 2..].windows(2).position(|w| w == b":]") {
                        Some(k) => i += k + 3,
                        None => return false,
                    }
                    continue;
                }
                b'&' | b'-' | b'~' if b.get(i + 1) == Some(&c) => return false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'[' => {
                in_class = true;
                i += 1;
                // a leading `^` and `]` are literal in both
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                continue;
            }
            b'{' if b.get(i + 1) == Some(&b',') => return false,
            b'(' if b.get(i + 1) == Some(&b'?') => {
                let flags = b[i + 2..].iter().take_while(|x| x.is_ascii_alphabetic() || **x == b'-');
                if flags.clone().any(|x| *x == b'x') {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// A compiled pattern.
pub struct Compiled {
    pcre: Pcre,
    /// the same pattern in the `regex` crate, faster (see bench_pcre_vs_regex), when it gives
    /// the same matches (fast_eligible)
    fast: Option<regex::bytes::Regex>,
    grow: Option<Grow>,
}

impl Compiled {
    pub fn new(pattern: &[u8], opts: i64) -> Result<Compiled, String> {
        let pat = translate(pattern);
        let pcre = RegexBuilder::new()
            .multi_line(true)
            .caseless(opts & CASE_INSENSITIVE != 0)
            .extended(opts & EXTENDED != 0)
            .jit_if_available(true)
            .build(&pat)
            .map_err(|e| compile_error(&e))?;
        let fast = if fast_eligible(&pat, opts) {
            regex::bytes::RegexBuilder::new(&pat)
                .unicode(false)
                .multi_line(true)
                .case_insensitive(opts & CASE_INSENSITIVE != 0)
                .size_limit(4 << 20)
                .build()
                .ok()
        } else {
            None
        };
        let grow = Grow::build(&pat, opts);
        Ok(Compiled { pcre, fast, grow })
    }

    /// Leftmost-first match of a whole string (the `regex` crate when it is eligible; an empty
    /// match is checked again by PCRE, whose multiline `^` does not match after a final
    /// newline).
    pub fn find(&self, hay: &[u8]) -> Result<Option<(usize, usize)>, String> {
        if let Some(f) = &self.fast {
            match f.find(hay) {
                None => return Ok(None),
                Some(m) if m.start() < m.end() => return Ok(Some((m.start(), m.end()))),
                Some(_) => {}
            }
        }
        self.find_at(hay, 0)
    }

    /// Leftmost-first match from `start` (hay[..start] is lookbehind context).
    pub fn find_at(&self, hay: &[u8], start: usize) -> Result<Option<(usize, usize)>, String> {
        match self.pcre.find_at(hay, start) {
            Ok(m) => Ok(m.map(|m| (m.start(), m.end()))),
            Err(e) => Err(format!("PCRE internal error: {e}")),
        }
    }

    /// The earliest position >= from where a match may still start (data to come).
    fn partial_start(&self, hay: &[u8], from: usize) -> Option<usize> {
        let len = hay.len();
        if from >= len {
            return None;
        }
        match &self.grow {
            Some(g) => {
                let lo = match g.max_len {
                    Some(l) => from.max(len.saturating_sub(l)),
                    None => from,
                };
                (lo..len).find(|&p| g.alive(hay, p))
            }
            None => Some(from.max(len.saturating_sub(FALLBACK_WINDOW))),
        }
    }

    /// A match at p that reaches the end of hay could grow with more data.
    fn may_grow(&self, hay: &[u8], p: usize) -> bool {
        match &self.grow {
            Some(g) => g.may_grow(hay, p),
            None => false,
        }
    }
}

/// Lua userdata of a compiled pattern.
pub struct LuaRegexp(pub Rc<Compiled>);

impl UserData for LuaRegexp {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // find(string) -> start, end (0-based, end exclusive) | nil
        m.add_method("find", |_, this, s: mlua::LuaString| {
            let b = s.as_bytes();
            match this.0.find(&b) {
                Ok(Some((s, e))) => Ok((Some(s), Some(e))),
                Ok(None) => Ok((None, None)),
                Err(e) => Err(mlua::Error::RuntimeError(e)),
            }
        });
        m.add_method("sink", |_, this, ()| Ok(Sink::new(this.0.clone())));
    }
}

/// A stream matcher (see the module doc).
pub struct Sink {
    re: Rc<Compiled>,
    /// kept bytes; buf[0] is at stream offset `base`
    buf: Vec<u8>,
    base: usize,
    /// index in buf where the search starts (earliest possible match start)
    start: usize,
    /// stream bytes fed
    processed: usize,
    state: i8,
    /// stream offset of the current partial match (valid when state is PARTIAL), or of the match
    at: usize,
}

/// What a feed registered: Haka's result first/last, -1 when not set by this feed.
pub struct Fed {
    pub state: i8,
    pub first: i64,
    pub last: i64,
}

impl Sink {
    pub fn new(re: Rc<Compiled>) -> Sink {
        Sink { re, buf: Vec::new(), base: 0, start: 0, processed: 0, state: NOMATCH, at: 0 }
    }

    pub fn state(&self) -> i8 {
        self.state
    }

    pub fn processed(&self) -> usize {
        self.processed
    }

    /// Stream offset where the current partial match or the match starts.
    pub fn start_offset(&self) -> usize {
        self.at
    }

    /// Drop kept bytes before index `keep_from` (keeping CONTEXT bytes before it).
    fn trim(&mut self, keep_from: usize) {
        let cut = keep_from.saturating_sub(CONTEXT);
        if cut > 0 {
            self.buf.drain(..cut);
            self.base += cut;
        }
        self.start = keep_from - cut;
    }

    pub fn feed(&mut self, data: &[u8], eof: bool) -> Result<Fed, String> {
        if self.state == MATCH || self.state == ERROR {
            return Ok(Fed { state: self.state, first: -1, last: -1 });
        }
        let prev = self.state;
        let prev_at = self.at;
        self.buf.extend_from_slice(data);
        self.processed += data.len();
        let len = self.buf.len();
        let found = match self.re.find_at(&self.buf, self.start) {
            Ok(f) => f,
            Err(e) => {
                self.state = ERROR;
                self.buf = Vec::new();
                return Err(e);
            }
        };
        let mut partial = None;
        if let Some((s, e)) = found {
            if eof || e < len || !self.re.may_grow(&self.buf, s) {
                let first = (self.base + s) as i64;
                let last = (self.base + e) as i64;
                let moved = prev != PARTIAL || prev_at != self.base + s;
                self.state = MATCH;
                self.at = self.base + s;
                self.buf = Vec::new();
                return Ok(Fed { state: MATCH, first: if moved { first } else { -1 }, last });
            }
            // PARTIAL_HARD: a match that may still grow is a partial match
            partial = Some(s.min(self.re.partial_start(&self.buf, self.start).unwrap_or(s)));
        } else if let Some(p) = self.re.partial_start(&self.buf, self.start) {
            partial = Some(p);
        }
        match partial {
            Some(mut p) => {
                if len - p > MAX_RETAIN {
                    p = len - MAX_RETAIN;
                }
                let off = self.base + p;
                let moved = prev != PARTIAL || prev_at != off;
                self.state = PARTIAL;
                self.at = off;
                self.trim(p);
                Ok(Fed { state: PARTIAL, first: if moved { off as i64 } else { -1 }, last: -1 })
            }
            None => {
                self.state = NOMATCH;
                self.trim(len);
                Ok(Fed { state: NOMATCH, first: -1, last: -1 })
            }
        }
    }
}

impl UserData for Sink {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // feed(string, eof) -> state, first, last (stream offsets registered by this feed, or -1)
        m.add_method_mut("feed", |_, this, (s, eof): (mlua::LuaString, Option<bool>)| {
            let b = s.as_bytes();
            match this.feed(&b, eof.unwrap_or(false)) {
                Ok(f) => Ok((f.state, f.first, f.last)),
                Err(e) => Err(mlua::Error::RuntimeError(e)),
            }
        });
        m.add_method("state", |_, this, ()| Ok(this.state()));
        m.add_method("processed", |_, this, ()| Ok(this.processed()));
        m.add_method("start", |_, this, ()| Ok(this.start_offset()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str, o: i64) -> Rc<Compiled> {
        Rc::new(Compiled::new(p.as_bytes(), o).unwrap())
    }

    fn find(p: &str, o: i64, s: &str) -> Option<(usize, usize)> {
        c(p, o).find_at(s.as_bytes(), 0).unwrap()
    }

    #[test]
    fn pcre_features() {
        assert_eq!(find("(a+)b%1", 0, "xaabaa"), Some((1, 6)));
        assert_eq!(find(r"(\w)\1", 0, "abccd"), Some((2, 4)));
        assert_eq!(find("foo(?=bar)", 0, "foobaz foobar"), Some((7, 10)));
        assert_eq!(find("(?<!x)foo", 0, "xfoo foo"), Some((5, 8)));
        assert_eq!(find("%d+?", 0, "a123"), Some((1, 2)));
        assert_eq!(find("a%00b", 0, "xa\0b"), Some((1, 4)));
        assert_eq!(find("%101", 0, "xA"), Some((1, 2)));
        assert_eq!(find("camel case", 0, "CaMeL CaSe"), None);
        assert_eq!(find("camel case", CASE_INSENSITIVE, "CaMeL CaSe"), Some((0, 10)));
        assert_eq!(find("a b c", EXTENDED, "abc"), Some((0, 3)));
        assert_eq!(find("^b$", 0, "a\nb\nc"), Some((2, 3)));
        assert_eq!(find("100%%", 0, "it is 100%"), Some((6, 10)));
        assert_eq!(find("a++b", 0, "aab"), Some((0, 3)));
    }

    #[test]
    fn fast_path_only_when_equal() {
        for p in ["passwd", "(select|union) ", "[0-9]+%.php", "^GET [^ ]*", "a[]b]c", "[[:alpha:]]+", "(?i)ab"] {
            assert!(c(p, 0).fast.is_some(), "{p}");
        }
        for p in ["a%vb", "%<a", "a{,3}", "[a&&b]", "[a-z--c]", "[a[b]]", "(?x)a b", "%1", "(a)%1", "a%Qb%E"] {
            assert!(Compiled::new(p.as_bytes(), 0).map(|r| r.fast.is_none()).unwrap_or(true), "{p}");
        }
        assert!(c("ab", EXTENDED).fast.is_none());
        // the same matches from both engines, empty ones included
        let hays: [&[u8]; 4] = [b"a\nb\n", b"GET /x.php HTTP", b"", b"ab\xffAB"];
        for p in ["^", "^$", "$", "x*", "^[A-Z]+", "b$", "(?i)ab", "%xff", "a|ab", "(a|ab)(c|bcd)?"] {
            let r = c(p, 0);
            for h in hays {
                assert_eq!(r.find(h).unwrap(), r.find_at(h, 0).unwrap(), "{p} on {h:?}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in ["?", "(", "a)", "[a", "%", "(?<=a+)b", "a{2,1}", "\\k<x>"] {
            let e = Compiled::new(p.as_bytes(), 0).err().unwrap_or_default();
            assert!(e.starts_with("PCRE compilation failed with error '"), "{p}: {e}");
            assert!(e.contains("at offset"), "{e}");
        }
        // any bytes: no panic
        let all: Vec<u8> = (0..=255u8).collect();
        let _ = Compiled::new(&all, 0);
        let _ = Compiled::new(b"\xff%\xfe[\x00-\xff]", 0).unwrap();
    }

    #[test]
    fn sink_across_three_chunks() {
        let mut s = Sink::new(c("foo%d+bar", 0));
        let f = s.feed(b"xx fo", false).unwrap();
        assert_eq!((f.state, f.first, f.last), (PARTIAL, 3, -1));
        let f = s.feed(b"o12", false).unwrap();
        assert_eq!((f.state, f.first, f.last), (PARTIAL, -1, -1));
        let f = s.feed(b"3bar tail", false).unwrap();
        assert_eq!((f.state, f.first, f.last), (MATCH, -1, 12));
        assert_eq!(s.start_offset(), 3);
    }

    #[test]
    fn sink_partial_then_other_match() {
        let mut s = Sink::new(c("foo", 0));
        assert_eq!(s.feed(b"bar fo", false).unwrap().state, PARTIAL);
        let f = s.feed(b"b foo", true).unwrap();
        assert_eq!((f.state, f.first, f.last), (MATCH, 8, 11));
    }

    #[test]
    fn sink_partial_states() {
        let mut s = Sink::new(c("abc", 0));
        assert_eq!(s.feed(b"aaa", true).unwrap().state, PARTIAL);
        let mut s = Sink::new(c("abc", 0));
        assert_eq!(s.feed(b"aaax", false).unwrap().state, NOMATCH);
        // a match that may grow waits for more data
        let mut s = Sink::new(c("fo+", 0));
        assert_eq!(s.feed(b"a foo", false).unwrap().state, PARTIAL);
        let f = s.feed(b"o!", false).unwrap();
        assert_eq!((f.state, f.first, f.last), (MATCH, -1, 6));
        // a fixed match at the end of a chunk is complete
        let mut s = Sink::new(c("foo", 0));
        assert_eq!(s.feed(b"a foo", false).unwrap().state, MATCH);
        // $ before the end of the stream
        let mut s = Sink::new(c("foo$", 0));
        assert_eq!(s.feed(b"foo", false).unwrap().state, PARTIAL);
        assert_eq!(s.feed(b"d", false).unwrap().state, NOMATCH);
        let mut s = Sink::new(c("foo$", 0));
        assert_eq!(s.feed(b"foo", false).unwrap().state, PARTIAL);
        assert_eq!(s.feed(b"", true).unwrap().state, MATCH);
    }

    #[test]
    fn sink_backreference_and_lookbehind_across_chunks() {
        let mut s = Sink::new(c("(%w+)=%1;", 0));
        assert_eq!(s.feed(b"x abc=a", false).unwrap().state, PARTIAL);
        let f = s.feed(b"bc; y", false).unwrap();
        assert_eq!((f.state, f.first, f.last), (MATCH, 2, 10));
        let mut s = Sink::new(c("(?<=ab)c", 0));
        assert_eq!(s.feed(b"xxab", false).unwrap().state, PARTIAL);
        let f = s.feed(b"c", false).unwrap();
        assert_eq!((f.state, f.last), (MATCH, 5));
    }

    /// No panic on odd patterns and inputs (errors are values).
    #[test]
    fn odd_patterns_and_inputs_do_not_panic() {
        let pats: [&[u8]; 14] = [
            b"", b"(?:", b"%", b"%%", b"(a*)*b", b"(?<=%d{1,3})x", b"\\x{110000}", b"(?R)", b"a{99999}",
            b"\xff\x00", b"(a)(?1)", b"[%w-%d]", b"((((((((((a))))))))))%10", b"(*LIMIT_MATCH=10)(a+)+$",
        ];
        let mut seed = 12345u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
            (seed >> 16) as u8
        };
        for p in pats {
            let Ok(r) = Compiled::new(p, 0) else { continue };
            let r = Rc::new(r);
            for n in [0usize, 1, 7, 300, 5000] {
                let data: Vec<u8> = (0..n).map(|_| rnd() % 4 + b'a').collect();
                let _ = r.find(&data);
                let mut s = Sink::new(r.clone());
                for ch in data.chunks(3) {
                    let _ = s.feed(ch, false);
                }
                let _ = s.feed(b"", true);
            }
        }
        // catastrophic backtracking is an error, not a hang or a panic
        let r = c("(a+)+$", 0);
        let hay = [b"a".repeat(40), b"!".to_vec()].concat();
        let _ = r.find(&hay);
    }

    #[test]
    fn sink_memory_is_bounded() {
        let mut s = Sink::new(c("a.*z", 0));
        let chunk = vec![b'a'; 10_000];
        for _ in 0..20 {
            assert_eq!(s.feed(&chunk, false).unwrap().state, PARTIAL);
        }
        assert!(s.buf.len() <= MAX_RETAIN + CONTEXT);
        let mut s = Sink::new(c("abc", 0));
        for _ in 0..20 {
            s.feed(&chunk, false).unwrap();
        }
        assert!(s.buf.len() <= CONTEXT + 2);
    }

    /// ns per search, PCRE2 (JIT) against the `regex` crate, on typical rule patterns over
    /// 200-byte strings (match and no match). Run with `cargo test --release -p haka-engine
    /// lua::regexp::tests::bench_pcre_vs_regex -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_pcre_vs_regex() {
        use std::time::Instant;
        let pats = [
            ("literal", "passwd"),
            ("alternation", "(select|union|insert|drop) "),
            ("class+literal", "[0-9]+%.php"),
            ("modsec", "(/%*!?|%*/|[';]--|--[%s%r%n%f]|(?:--[^-]*?-)|([^%-&])#.*?[%s%r%n%f]|;?%x00)"),
        ];
        let base = "GET /index.php?id=12&name=some+value&other=thing HTTP/1.1 Host: www.example.com User-Agent: Mozilla/5.0 (X11; Linux x86_64) Accept: text/html,application/xhtml+xml Accept-Language: en-US,en;q=0.5 X: ";
        let hay_no: Vec<u8> = base.bytes().take(200).collect();
        let mut hay_yes = hay_no.clone();
        let n = hay_yes.len();
        hay_yes[n - 12..].copy_from_slice(b"/etc/passwd ");
        let iters = 200_000;
        for (name, p) in pats {
            let pc = Compiled::new(p.as_bytes(), 0).unwrap();
            let rx = regex::bytes::Regex::new(&translate(p.as_bytes())).unwrap();
            for (what, hay) in [("no match", &hay_no), ("match", &hay_yes)] {
                let t = Instant::now();
                let mut k = 0;
                for _ in 0..iters {
                    k += pc.find_at(std::hint::black_box(hay), 0).unwrap().is_some() as usize;
                }
                let pns = t.elapsed().as_nanos() as f64 / iters as f64;
                let t = Instant::now();
                let mut k2 = 0;
                for _ in 0..iters {
                    k2 += rx.find(std::hint::black_box(hay)).is_some() as usize;
                }
                let rns = t.elapsed().as_nanos() as f64 / iters as f64;
                assert_eq!(k, k2, "{name}");
                println!("{name:14} {what:9} pcre2-jit {pns:7.1} ns  regex {rns:7.1} ns");
            }
        }
    }
}
