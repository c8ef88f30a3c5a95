//! Alert record produced by `haka.alert{...}` / `alert:update{...}` (Haka 0.4 keys),
//! as the Lua side builds it; `into_output` turns it into the record the alert
//! outputs (`crate::alert`) write.

/// One alert, or one update of an earlier alert (`update == true`, same `id`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alert {
    /// Per-worker sequence: `worker << 48 | n`, unique across workers.
    pub id: u64,
    /// `start_time` (seconds since the epoch) if given, else the time of the call.
    pub time_secs: f64,
    /// `start_time` if given (Haka prints it).
    pub start_time_secs: Option<f64>,
    /// `end_time` if given.
    pub end_time_secs: Option<f64>,
    pub description: String,
    /// `low|medium|high` (as given).
    pub severity: String,
    /// `low|medium|high` or a number, as a string.
    pub confidence: String,
    /// `failed|successful`.
    pub completion: String,
    pub method_description: String,
    pub method_ref: Vec<String>,
    /// Each source: `address a1 a2 ...` or `service name` rendering of the node.
    pub sources: Vec<String>,
    pub targets: Vec<String>,
    /// `ref`: ids of related alerts.
    pub refs: Vec<u64>,
    /// Flow of the packet being processed when the alert was raised (src, sport, dst, dport, proto).
    pub flow: Option<(String, u16, String, u16, u8)>,
    /// "up" / "down" for the current packet, if any.
    pub direction: Option<String>,
    pub worker: usize,
    pub update: bool,
    /// The SIEM fields ([`crate::alert::Siem`]): flow id, input port, rule, action,
    /// application metadata (the Lua side sends the rule's and the application's).
    pub siem: crate::alert::Siem,
    /// Slot of the packet it was raised on (-1: none): its verdict sets `siem.action`.
    pub pkt: i64,
}

impl Alert {
    /// The record the alert outputs write (stdout, EVE, syslog).
    pub fn into_output(self) -> crate::alert::Alert {
        fn opt(s: String) -> Option<String> {
            (!s.is_empty()).then_some(s)
        }
        crate::alert::Alert {
            id: self.id,
            time_secs: self.time_secs,
            start_time: self.start_time_secs,
            end_time: self.end_time_secs,
            description: opt(self.description),
            severity: opt(self.severity),
            confidence: opt(self.confidence),
            completion: opt(self.completion),
            method_description: opt(self.method_description),
            method_ref: self.method_ref,
            // (entries keep their "address: " / "service: " kind, see `format::node_type`)
            sources: self.sources,
            targets: self.targets,
            refs: self.refs,
            flow: self.flow.map(|(src, sport, dst, dport, proto)| crate::alert::FlowInfo { proto, src, sport, dst, dport }),
            direction: self.direction,
            worker: self.worker,
            update: self.update,
            siem: self.siem,
            console: Vec::new(),
        }
    }
}
