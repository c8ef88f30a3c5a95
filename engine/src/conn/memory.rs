//! The flow memory budget (`[memory]`): every byte a worker holds for a connection
//! (the connection itself, its stream reassemblers with their out-of-order chunks,
//! delivery buffer and retransmission history, and its application dissector's state:
//! HTTP heads being received, DNS-over-TCP framing and pending queries, TLS hello
//! buffers) is charged to the connection and to the worker. Each part has its own cap
//! already (`[tcp] stream_buffer_per_flow_kb`, `[http]`'s head limit, `[tls]
//! max_hello_bytes`, ...); this budget bounds their sum, per flow and per worker, so
//! that no mix of half-open states can grow a worker past what the operator allowed.
//!
//! A connection is re-charged after each of its packets (a few additions: the parts
//! report their held bytes). Going over a cap is counted by which cap and by which part
//! held the most, and gets `[memory] over_cap`: the connection is dropped (its state
//! freed at once), or with "accept" its inspection stops (state freed, packets pass).
//!
//! Classes: what a connection's bytes are reported under in the stats (bytes per
//! connection by protocol): its application dissector's name, or tcp/udp without one.
#![deny(unsafe_code)]

/// `[memory]` settings, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    pub per_flow: usize,
    pub per_worker: usize,
    /// Over a cap: drop the connection (true) or stop inspecting it.
    pub over_cap_drop: bool,
    /// The Lua heap size above which the worker measures the flows' Lua objects.
    pub lua_scan_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { per_flow: 1 << 20, per_worker: 1 << 30, over_cap_drop: true, lua_scan_bytes: 16 << 20 }
    }
}

/// Stats classes: tcp, udp, then one per registered application dissector.
pub const CLASSES: usize = 5;
pub const CLASS_NAMES: [&str; CLASSES] = ["tcp", "udp", "http", "dns", "tls"];

/// The class of a connection of IP protocol `proto` with dissector `app_id` (0: none).
pub fn class_of(proto: u8, app_id: u8) -> u8 {
    match app_id {
        0 => (proto != 6) as u8,
        id => (1 + id as usize).min(CLASSES - 1) as u8,
    }
}

/// Which part of a connection held the most when it went over a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Stream reassembly: out-of-order chunks, delivery buffer, retransmission history.
    Stream,
    /// The application dissector's state.
    Parser,
    /// What the rules and Lua dissectors keep on the flow's Lua object (measured by the
    /// worker's scan of the flow objects, see `LuaEngine::flow_sizes`).
    Lua,
}

/// Which cap was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverCap {
    /// The worker's cap (false: the flow's own).
    pub worker: bool,
    pub part: Part,
    /// The connection's bytes at the time.
    pub bytes: usize,
}

/// A connection's held bytes, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub fixed: usize,
    pub stream: usize,
    pub parser: usize,
    pub lua: usize,
}

impl Held {
    pub fn total(&self) -> usize {
        self.fixed + self.stream + self.parser + self.lua
    }
}

/// Per-class figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassUse {
    /// Connections charged under this class now.
    pub connections: u64,
    /// Their bytes now.
    pub bytes: u64,
    /// The most one connection of this class held so far.
    pub max_bytes: u64,
}

/// The worker's side of the budget.
#[derive(Debug)]
pub struct FlowMemory {
    pub cfg: MemoryConfig,
    /// Bytes charged by all the connections.
    pub held: usize,
    pub peak: usize,
    pub classes: [ClassUse; CLASSES],
    pub flow_cap_hits: u64,
    pub worker_cap_hits: u64,
    pub stream_cap_hits: u64,
    pub parser_cap_hits: u64,
    pub lua_cap_hits: u64,
    /// The part of `held` that is the connections' Lua objects.
    pub lua_held: usize,
}

impl FlowMemory {
    pub fn new(cfg: MemoryConfig) -> FlowMemory {
        FlowMemory {
            cfg,
            held: 0,
            peak: 0,
            classes: [ClassUse::default(); CLASSES],
            flow_cap_hits: 0,
            worker_cap_hits: 0,
            stream_cap_hits: 0,
            parser_cap_hits: 0,
            lua_cap_hits: 0,
            lua_held: 0,
        }
    }

    /// Re-charges a connection that was charged `old` bytes under class `old_class`
    /// (`None`: not charged yet) with `now`, under `class`. Returns the cap it went over,
    /// if any (the charge is made either way: the caller frees the state and calls
    /// [`uncharge`](Self::uncharge)).
    pub fn charge(&mut self, old: Option<(usize, u8)>, now: &Held, class: u8) -> Option<OverCap> {
        let bytes = now.total();
        if let Some((old_bytes, old_class)) = old {
            self.uncharge(old_bytes, old_class);
        }
        self.held += bytes;
        self.peak = self.peak.max(self.held);
        let c = &mut self.classes[class as usize];
        c.connections += 1;
        c.bytes += bytes as u64;
        c.max_bytes = c.max_bytes.max(bytes as u64);
        let grew = old.is_none_or(|(b, _)| bytes > b);
        let worker = self.held > self.cfg.per_worker;
        if !grew || (bytes <= self.cfg.per_flow && !worker) {
            return None;
        }
        let part = if now.lua > now.stream.max(now.parser) {
            Part::Lua
        } else if now.stream >= now.parser {
            Part::Stream
        } else {
            Part::Parser
        };
        if worker {
            self.worker_cap_hits += 1;
        } else {
            self.flow_cap_hits += 1;
        }
        match part {
            Part::Stream => self.stream_cap_hits += 1,
            Part::Parser => self.parser_cap_hits += 1,
            Part::Lua => self.lua_cap_hits += 1,
        }
        Some(OverCap { worker, part, bytes })
    }

    /// Takes back a connection's charge (it ended, or its state was freed).
    pub fn uncharge(&mut self, bytes: usize, class: u8) {
        self.held -= bytes.min(self.held);
        let c = &mut self.classes[class as usize];
        c.connections = c.connections.saturating_sub(1);
        c.bytes = c.bytes.saturating_sub(bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(stream: usize, parser: usize) -> Held {
        Held { fixed: 100, stream, parser, lua: 0 }
    }

    #[test]
    fn charges_add_up_per_worker_and_class_and_come_back() {
        let mut m = FlowMemory::new(MemoryConfig { per_flow: 10_000, per_worker: 1 << 20, over_cap_drop: true, lua_scan_bytes: 0 });
        assert_eq!(m.charge(None, &held(0, 500), 2), None);
        assert_eq!(m.charge(None, &held(1000, 0), 0), None);
        assert_eq!(m.held, 600 + 1100);
        // a re-charge replaces the old one, in its new class
        assert_eq!(m.charge(Some((600, 2)), &held(0, 900), 3), None);
        assert_eq!(m.held, 1000 + 1100);
        assert_eq!((m.classes[2].connections, m.classes[2].bytes), (0, 0));
        assert_eq!((m.classes[3].connections, m.classes[3].bytes, m.classes[3].max_bytes), (1, 1000, 1000));
        m.uncharge(1000, 3);
        m.uncharge(1100, 0);
        assert_eq!(m.held, 0);
        assert_eq!(m.peak, 2100);
        assert_eq!(m.classes[0].max_bytes, 1100);
    }

    #[test]
    fn a_flow_over_its_cap_or_growing_past_the_workers_is_reported_by_part() {
        let mut m = FlowMemory::new(MemoryConfig { per_flow: 1000, per_worker: 2720, over_cap_drop: true, lua_scan_bytes: 0 });
        let o = m.charge(None, &held(0, 2000), 2).unwrap();
        assert_eq!(o, OverCap { worker: false, part: Part::Parser, bytes: 2100 });
        m.uncharge(2100, 2);
        // three flows under their cap; the one whose growth crosses the worker's cap is reported
        for _ in 0..3 {
            assert_eq!(m.charge(None, &held(800, 0), 0), None);
        }
        let o = m.charge(Some((900, 0)), &held(850, 0), 0).unwrap();
        assert!(o.worker && o.part == Part::Stream);
        // a flow that does not grow is never the one reported
        assert_eq!(m.charge(Some((950, 0)), &held(700, 0), 0), None);
        assert_eq!((m.flow_cap_hits, m.worker_cap_hits, m.stream_cap_hits, m.parser_cap_hits), (1, 1, 1, 1));
    }

    #[test]
    fn classes_follow_the_dissector() {
        assert_eq!(CLASS_NAMES[class_of(6, 0) as usize], "tcp");
        assert_eq!(CLASS_NAMES[class_of(17, 0) as usize], "udp");
        for (i, r) in crate::dissectors::REGISTRY.iter().enumerate() {
            assert_eq!(CLASS_NAMES[class_of(6, i as u8 + 1) as usize], r.name);
        }
    }
}
