//! Prefilters of HTTP rules: `haka.rule{ on = http.events.request, prefilter = {...}, ... }`.
//!
//! An IPS runs many rules that look for rare things (an attack tool's user agent, a
//! keyword in the URI). Calling Lua for every message only to find nothing costs most of
//! the time on web traffic: the message objects, their strings and the collector behind
//! them. A prefilter is a rule's necessary condition, checked here on the head bytes as
//! received, before any Lua runs (Snort's and Suricata's "fast pattern"): the rule's
//! `eval` runs only for messages where one of its substrings occurs (ASCII
//! case-insensitive), and Lua is not called at all for a message that selects no rule.
//! `eval` still checks the full condition.
//!
//! Per event (request, response) a selection says which listeners run: bit `j - 1` for
//! listener `j` up to 31, bit 31 for the listeners after the 31st (their prefilters are
//! not used: they always run). Listeners without a prefilter always run.
//!
//! A rule may also set header fields itself (`set_headers = { Server = "haka" }`): the
//! engine applies them to the head of each message the rule is selected for, before any
//! Lua rule sees it. A rule with `set_headers` and no `eval` is the engine's alone: Lua is
//! not called for it.

use crate::dissectors::http::{find_field, FieldSet, RawHead};

/// Where a pattern is looked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// Part of the start line: the request's method, uri, version (0, 1, 2) or the
    /// response's version, status, reason.
    Part(usize),
    /// The values of the fields with this name (lowercase).
    Header(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub field: Field,
    /// Lowercase, not empty.
    pub needle: Vec<u8>,
}

/// The prefiltered listeners of one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    /// Listeners on the event.
    listeners: usize,
    /// (bit of the listener, its patterns: any of them selects it).
    rules: Vec<(u32, Vec<Pattern>)>,
    /// The bits of the listeners that always run.
    always: u32,
    /// Listeners that only set header fields (no `eval`): no Lua call for them.
    engine_only: u32,
    /// Header fields set by the listeners (bit, fields), in listener order.
    sets: Vec<(u32, Vec<FieldSet>)>,
}

/// Bit of listener `j` (1-based) in a selection.
pub fn listener_bit(j: usize) -> u32 {
    if j <= 31 {
        1 << (j - 1)
    } else {
        1 << 31
    }
}

/// Every listener runs (the event has no prefilter).
pub const ALL: u32 = u32::MAX;

impl EventFilter {
    /// `rules`: (listener, its patterns) for listeners 1 to 31 (others are ignored: those
    /// listeners always run). `sets`: (listener, the fields it sets, whether it has no
    /// `eval`).
    pub fn new(listeners: usize, rules: Vec<(usize, Vec<Pattern>)>, sets: Vec<(usize, Vec<FieldSet>, bool)>) -> EventFilter {
        let rules: Vec<(u32, Vec<Pattern>)> = rules
            .into_iter()
            .filter(|(j, p)| (1..=31.min(listeners)).contains(j) && !p.is_empty())
            .map(|(j, p)| (listener_bit(j), p))
            .collect();
        let mut always = (1..=listeners).fold(0, |m, j| m | listener_bit(j));
        for (bit, _) in &rules {
            always &= !bit;
        }
        let mut sets: Vec<(usize, Vec<FieldSet>, bool)> = sets.into_iter().filter(|s| (1..=listeners).contains(&s.0)).collect();
        sets.sort_by_key(|s| s.0);
        let engine_only = sets.iter().filter(|s| s.2 && s.0 <= 31).fold(0, |m, s| m | listener_bit(s.0));
        let sets = sets.into_iter().map(|(j, f, _)| (listener_bit(j), f)).collect();
        EventFilter { listeners, rules, always, engine_only, sets }
    }

    /// The listeners to run for `head`: 0 when none (no Lua call for it), [`ALL`] when the
    /// event has listeners and no prefilter.
    pub fn select(&self, head: &RawHead) -> u32 {
        if self.listeners == 0 {
            return 0;
        }
        if self.rules.is_empty() && self.sets.is_empty() {
            return ALL;
        }
        let mut mask = self.always;
        for (bit, pats) in &self.rules {
            if pats.iter().any(|p| matches(head, p)) {
                mask |= bit;
            }
        }
        mask
    }

    /// The part of a selection that needs Lua (0: no call).
    pub fn lua_rules(&self, selected: u32) -> u32 {
        if selected == ALL {
            ALL
        } else {
            selected & !self.engine_only
        }
    }

    /// The header fields the selected listeners set, in listener order.
    pub fn sets(&self, selected: u32) -> impl Iterator<Item = &FieldSet> + Clone {
        self.sets.iter().filter(move |(bit, _)| selected & bit != 0).flat_map(|(_, f)| f.iter())
    }
}

/// Prefilters of the HTTP request and response events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpPrefilters {
    pub request: EventFilter,
    pub response: EventFilter,
}

impl HttpPrefilters {
    fn event(&self, is_request: bool) -> &EventFilter {
        if is_request {
            &self.request
        } else {
            &self.response
        }
    }

    /// What the rules of `head`'s event do with it: the listeners Lua runs (0: no call) and
    /// whether the selected rules' header fields change it (the new head is then in `out`, a
    /// buffer the caller reuses).
    pub fn apply(&self, head: &RawHead, out: &mut Vec<u8>) -> (u32, bool) {
        let ev = self.event(head.is_request);
        let selected = ev.select(head);
        let sets = ev.sets(selected);
        let changed = sets.clone().next().is_some() && crate::dissectors::http::set_fields(head, sets, out);
        (ev.lua_rules(selected), changed)
    }
}

fn matches(head: &RawHead, p: &Pattern) -> bool {
    match &p.field {
        Field::Part(i) => contains_ignore_case(head.part(*i), &p.needle),
        // folded values span lines: select the rule rather than miss it
        Field::Header(_) if head.info.obs_fold => true,
        Field::Header(name) => {
            let mut from = head.info.fields_start;
            while let Some(f) = find_field(&head.bytes, from, name) {
                if contains_ignore_case(&head.bytes[f.value.0..f.value.1], &p.needle) {
                    return true;
                }
                from = f.line_end + 1;
            }
            false
        }
    }
}

/// Whether `needle` (lowercase, not empty) occurs in `hay`, ASCII case-insensitively.
pub fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return true };
    if needle.len() > hay.len() {
        return false;
    }
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        let Some(k) = memchr::memchr2(first, first.to_ascii_uppercase(), &hay[i..=last]) else { return false };
        let s = i + k;
        if hay[s..s + needle.len()].eq_ignore_ascii_case(needle) {
            return true;
        }
        i = s + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(b: &[u8], req: bool) -> RawHead {
        RawHead::scan(b.to_vec(), req).unwrap()
    }

    fn pat(field: Field, n: &str) -> Pattern {
        Pattern { field, needle: n.as_bytes().to_vec() }
    }

    #[test]
    fn substrings_are_found_ignoring_ascii_case() {
        assert!(contains_ignore_case(b"/x?q=1+UNION+Select", b"union"));
        assert!(contains_ignore_case(b"union", b"union"));
        assert!(contains_ignore_case(b"aaaab", b"aab"));
        assert!(!contains_ignore_case(b"unio", b"union"));
        assert!(!contains_ignore_case(b"", b"a"));
        assert!(contains_ignore_case(b"x-1%20", b"%20"));
        assert!(!contains_ignore_case(b"\xc3\xa9", b"\xc3\x89"), "ASCII only");
    }

    #[test]
    fn rules_are_selected_by_their_patterns_and_others_always_run() {
        let req = head(
            b"GET /Admin/x HTTP/1.1\r\nHost: h\r\nUser-Agent: a\r\nuser-agent: SQLMap/1.4\r\n\r\n",
            true,
        );
        let rules = vec![
            (1, vec![pat(Field::Part(1), "/admin")]),
            (2, vec![pat(Field::Header(b"user-agent".to_vec()), "sqlmap")]),
            (4, vec![pat(Field::Part(0), "post"), pat(Field::Header(b"host".to_vec()), "zz")]),
        ];
        let f = EventFilter::new(4, rules.clone(), vec![]);
        // 1: uri matches, 2: the second User-Agent field matches, 3: no prefilter, 4: none matches
        assert_eq!(f.select(&req), 0b0111);
        let other = head(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", true);
        assert_eq!(f.select(&other), 0b1100);
        // without listener 3, nothing selected: no Lua call
        let g = EventFilter::new(2, rules[..2].to_vec(), vec![]);
        assert_eq!(g.select(&other), 0);
        assert_eq!(EventFilter::new(2, vec![], vec![]).select(&other), ALL);
        assert_eq!(EventFilter::default().select(&other), 0);
    }

    #[test]
    fn responses_listeners_past_the_31st_and_folded_fields() {
        let resp = head(b"HTTP/1.1 500 Internal Server Error\r\nServer: x\r\n\r\n", false);
        let f = EventFilter::new(1, vec![(1, vec![pat(Field::Part(1), "500")])], vec![]);
        assert_eq!(f.select(&resp), 1);
        assert_eq!(f.select(&head(b"HTTP/1.1 200 OK\r\n\r\n", false)), 0);
        // listener 33 shares bit 31 and always runs, its prefilter unused
        let f = EventFilter::new(33, vec![(2, vec![pat(Field::Part(1), "404")]), (33, vec![pat(Field::Part(1), "404")])], vec![]);
        let m = f.select(&resp);
        assert_eq!(m & 0b10, 0);
        assert_ne!(m & (1 << 31), 0);
        // an obs-fold head selects its header prefilters (the value spans lines)
        let folded = head(b"HTTP/1.1 200 OK\r\nServer: a\r\n b\r\n\r\n", false);
        let f = EventFilter::new(1, vec![(1, vec![pat(Field::Header(b"x".to_vec()), "q")])], vec![]);
        assert_eq!(f.select(&folded), 1);
    }
}
