//! Ethernet ports: setup (queues, symmetric RSS, promiscuous), stats, and the
//! per-worker rx queue / tx buffer handles.
use super::mbuf::{Mbuf, MbufBurst, BURST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::io::Write;
use super::mempool::Mempool;
use std::ffi::CStr;

/// Symmetric Toeplitz key: a repeated 0x6d5a makes hash(a->b) == hash(b->a),
/// so both directions of a flow land on the same queue, hence the same worker.
const SYMMETRIC_RSS_KEY: [u8; 52] = [
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
];

// RTE_ETH_RSS_* bits (macros bindgen cannot evaluate).
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_IPV4_TCP: u64 = 1 << 4;
const RSS_IPV4_UDP: u64 = 1 << 5;
const RSS_IPV4_OTHER: u64 = 1 << 7;
const RSS_IPV6: u64 = 1 << 8;
const RSS_FRAG_IPV6: u64 = 1 << 9;
const RSS_IPV6_TCP: u64 = 1 << 10;
const RSS_IPV6_UDP: u64 = 1 << 11;
const RSS_IPV6_OTHER: u64 = 1 << 13;
const RSS_WANTED: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_IPV4_TCP
    | RSS_IPV4_UDP
    | RSS_IPV4_OTHER
    | RSS_IPV6
    | RSS_FRAG_IPV6
    | RSS_IPV6_TCP
    | RSS_IPV6_UDP
    | RSS_IPV6_OTHER;
const RX_OFFLOAD_RSS_HASH: u64 = 1 << 19;
const RX_OFFLOAD_TIMESTAMP: u64 = 1 << 14;

/// Ports DPDK probed (PCI devices bound to a DPDK driver, and --vdev devices).
pub fn available_ports() -> u16 {
    // SAFETY: plain getter, valid after EAL init.
    unsafe { dpdk_sys::rte_eth_dev_count_avail() }
}

#[derive(Clone, Debug)]
pub struct PortInfo {
    pub id: u16,
    pub name: String,
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (0: no RSS).
    pub rss_offloads: u64,
    pub socket: i32,
    /// Bus of the device: "pci" for NICs, "vdev" for virtual devices.
    pub bus: String,
}

impl PortInfo {
    pub fn query(id: u16) -> Result<PortInfo, String> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-parameter.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if ret != 0 {
            return Err(format!("port {id}: cannot get device info: {}", super::errno_str(ret)));
        }
        let mut name = [0 as std::ffi::c_char; 64];
        // SAFETY: name has room for RTE_ETH_NAME_MAX_LEN (64) bytes.
        unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, name.as_mut_ptr()) };
        // SAFETY: DPDK wrote a NUL-terminated string (or left zeros); driver_name is static.
        let (name, driver) = unsafe {
            (
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                if info.driver_name.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(info.driver_name).to_string_lossy().into_owned()
                },
            )
        };
        // SAFETY: plain getter.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        // SAFETY: info.device is the probed device (valid while the port exists);
        // rte_bus_name returns a static string.
        let bus = unsafe {
            let b = dpdk_sys::rte_dev_bus(info.device);
            if b.is_null() {
                String::new()
            } else {
                CStr::from_ptr(dpdk_sys::rte_bus_name(b)).to_string_lossy().into_owned()
            }
        };
        Ok(PortInfo {
            id,
            name,
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rss_offloads: info.flow_type_rss_offloads & RSS_WANTED,
            socket: if socket < 0 { dpdk_sys::SOCKET_ID_ANY } else { socket },
            bus,
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct PortSettings {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Configure symmetric RSS over `rx_queues` (the device must support it).
    pub rss: bool,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PortStats {
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// A configured port. Owned by the main lcore; workers use [`RxQueue`] and [`TxBuffer`].
pub struct Port {
    pub info: PortInfo,
    started: bool,
    closed: bool,
}

impl Port {
    /// Configures the device and its queues (not started yet).
    pub fn setup(info: PortInfo, s: &PortSettings, pool: &Mempool) -> Result<Port, String> {
        let id = info.id;
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let mut key = SYMMETRIC_RSS_KEY;
        if s.rss {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = 40;
            conf.rx_adv_conf.rss_conf.rss_hf = info.rss_offloads;
            conf.rxmode.offloads |= RX_OFFLOAD_RSS_HASH;
        }
        // net_pcap stamps each packet with its capture time (Unix epoch): rules and
        // timeouts run on the capture's time offline. (NICs' stamps are in their own
        // clock, not asked for.)
        if info.driver == "net_pcap" {
            conf.rxmode.offloads |= RX_OFFLOAD_TIMESTAMP;
        }
        let mut dev = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid out-parameter.
        unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut dev) };
        conf.rxmode.offloads &= dev.rx_offload_capa;
        if s.rss && dev.hash_key_size as usize > 40 {
            conf.rx_adv_conf.rss_conf.rss_key_len = dev.hash_key_size.min(52);
        }
        // SAFETY: conf (and the key it points to) is valid for the call; DPDK copies it.
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(id, s.rx_queues, s.tx_queues, &conf) };
        if ret != 0 {
            return Err(format!(
                "port {id} ({}): cannot configure {} rx / {} tx queues: {}",
                info.name,
                s.rx_queues,
                s.tx_queues,
                super::errno_str(ret)
            ));
        }
        let (mut nrxd, mut ntxd) = (s.rx_descriptors, s.tx_descriptors);
        // SAFETY: valid in/out parameters.
        unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrxd, &mut ntxd) };
        let socket = if info.socket < 0 { 0 } else { info.socket as u32 };
        for q in 0..s.rx_queues {
            // SAFETY: port configured; NULL rxconf = driver defaults; pool outlives the port
            // (the app closes ports before freeing the pool).
            let ret = unsafe { dpdk_sys::rte_eth_rx_queue_setup(id, q, nrxd, socket, std::ptr::null(), pool.as_ptr()) };
            if ret != 0 {
                return Err(format!(
                    "port {id} ({}): rx queue {q} setup failed: {} (the pool may be too small: [mempool] mbufs)",
                    info.name,
                    super::errno_str(ret)
                ));
            }
        }
        for q in 0..s.tx_queues {
            // SAFETY: port configured; NULL txconf = driver defaults.
            let ret = unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, q, ntxd, socket, std::ptr::null()) };
            if ret != 0 {
                return Err(format!("port {id} ({}): tx queue {q} setup failed: {}", info.name, super::errno_str(ret)));
            }
        }
        Ok(Port { info, started: false, closed: false })
    }

    pub fn id(&self) -> u16 {
        self.info.id
    }

    /// Starts the port, optionally promiscuous; returns a one-line link status.
    pub fn start(&mut self, promiscuous: bool) -> Result<String, String> {
        let id = self.info.id;
        // SAFETY: configured port.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(format!("port {id} ({}): start failed: {}", self.info.name, super::errno_str(ret)));
        }
        self.started = true;
        super::mbuf::lookup_rx_timestamp();
        if promiscuous {
            // SAFETY: started port. Not every vdev supports it; that is not fatal.
            let ret = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
            if ret != 0 && ret != -(libc::ENOTSUP) {
                eprintln!("haka: warning: port {id}: cannot enable promiscuous mode: {}", super::errno_str(ret));
            }
        }
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid out-parameter.
        unsafe { dpdk_sys::rte_eth_link_get_nowait(id, &mut link) };
        Ok(if link.link_status() != 0 {
            format!("link up {} Mbps {}", link.link_speed, if link.link_duplex() != 0 { "full-duplex" } else { "half-duplex" })
        } else {
            "link down".to_string()
        })
    }

    pub fn stats(&self) -> PortStats {
        port_stats(self.info.id)
    }

    /// Stops the port (flushes tx dumpers of pcap ports) and releases its queues' mbufs.
    pub fn stop_and_close(&mut self) {
        if self.started {
            // SAFETY: started port, no worker is polling it any more.
            unsafe { dpdk_sys::rte_eth_dev_stop(self.info.id) };
            self.started = false;
        }
        if !self.closed {
            // SAFETY: stopped port; its queues' mbufs go back to the pool.
            unsafe { dpdk_sys::rte_eth_dev_close(self.info.id) };
            self.closed = true;
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop_and_close();
    }
}

/// One rx queue of one port, polled by exactly one worker.
#[derive(Clone, Copy, Debug)]
pub struct RxQueue {
    pub port: u16,
    pub queue: u16,
}

impl RxQueue {
    /// Receives into the free tail of `burst`; returns how many arrived.
    #[inline(always)]
    pub fn rx(&self, burst: &mut MbufBurst) -> usize {
        let (p, room) = burst.tail_ptr();
        if room == 0 {
            return 0;
        }
        // SAFETY: p has room for `room` pointers; each worker owns its queue
        // exclusively, so the non-thread-safe rx path is never shared.
        let n = unsafe { dpdk_sys::shim_rx_burst(self.port, self.queue, p, room as u16) };
        burst.commit(n as usize);
        n as usize
    }
}

/// hakapcap's log of the packets sent, in send order: each one's rx timestamp as the
/// driver wrote it (0: none, e.g. a packet a rule created), 8 bytes little endian each,
/// streamed to a file (a long capture must not grow memory). net_pcap stamps what it
/// writes with the wall clock; hakapcap puts the capture's times back from this
/// (Haka writes a packet out with the timestamp it was captured with).
static TX_TIME_LOG_ON: AtomicBool = AtomicBool::new(false);
static TX_TIME_LOG: Mutex<Option<TxTimeLog>> = Mutex::new(None);

struct TxTimeLog {
    out: std::io::BufWriter<std::fs::File>,
    error: Option<String>,
}

/// Starts logging the rx timestamps of the packets sent into `sink` (see [`finish_tx_time_log`]).
pub fn start_tx_time_log(sink: std::fs::File) {
    if let Ok(mut log) = TX_TIME_LOG.lock() {
        *log = Some(TxTimeLog { out: std::io::BufWriter::with_capacity(1 << 16, sink), error: None });
    }
    TX_TIME_LOG_ON.store(true, Ordering::Relaxed);
}

/// Stops logging; returns the sink, flushed, once it holds the rx timestamps of every packet
/// sent since [`start_tx_time_log`], or the write error that cut it short.
pub fn finish_tx_time_log() -> Result<std::fs::File, String> {
    TX_TIME_LOG_ON.store(false, Ordering::Relaxed);
    let log = TX_TIME_LOG.lock().map_err(|_| "tx time log lock poisoned".to_string())?.take();
    let log = log.ok_or("tx time log was not started")?;
    if let Some(e) = log.error {
        return Err(e);
    }
    log.out.into_inner().map_err(|e| e.error().to_string())
}

/// How many times a burst's refused rest is offered again before it is dropped
/// (`tx_full`).
pub const TX_RETRIES: usize = 3;

/// Buffered transmit on one tx queue of one port (owned by one worker).
pub struct TxBuffer {
    pub port: u16,
    pub queue: u16,
    pending: MbufBurst,
}

impl TxBuffer {
    pub fn new(port: u16, queue: u16) -> TxBuffer {
        TxBuffer { port, queue, pending: MbufBurst::new() }
    }

    /// Queues a packet; sends a full burst. Returns (sent, dropped) by this call.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> (usize, usize) {
        match self.pending.push(m) {
            Ok(()) if self.pending.is_full() => self.flush(),
            Ok(()) => (0, 0),
            Err(m) => {
                let r = self.flush();
                let _ = self.pending.push(m);
                r
            }
        }
    }

    /// Sends what is pending; what the NIC refuses is freed. Returns (sent, dropped).
    #[inline]
    pub fn flush(&mut self) -> (usize, usize) {
        if self.pending.is_empty() {
            return (0, 0);
        }
        // (read before the PMD takes the mbufs: net_pcap frees them as it writes)
        let mut times = [0u64; BURST];
        let logging = TX_TIME_LOG_ON.load(Ordering::Relaxed);
        if logging {
            for (i, t) in times.iter_mut().enumerate().take(self.pending.len()) {
                *t = self.pending.get(i).and_then(Mbuf::rx_timestamp).unwrap_or(0);
            }
        }
        let mut sent = 0;
        // A refusal is often transient (a tap write failing once under load, a ring
        // draining): the rest is offered again a few times before it is dropped.
        for _ in 0..=TX_RETRIES {
            let (p, n) = self.pending.head_ptr();
            // SAFETY: p points to n owned mbufs; the PMD takes the first `now`,
            // which `consumed` forgets. The queue is owned by this worker only.
            let now = unsafe { dpdk_sys::shim_tx_burst(self.port, self.queue, p, n as u16) } as usize;
            self.pending.consumed(now);
            sent += now;
            if self.pending.is_empty() {
                break;
            }
        }
        if logging {
            if let Ok(mut guard) = TX_TIME_LOG.lock() {
                if let Some(log) = guard.as_mut().filter(|l| l.error.is_none()) {
                    for t in &times[..sent.min(BURST)] {
                        if let Err(e) = log.out.write_all(&t.to_le_bytes()) {
                            log.error = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }
        let dropped = self.pending.len();
        self.pending.clear();
        (sent, dropped)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// A port's basic counters (rte_eth_stats_get: callable from any thread, e.g. the control
/// and metrics threads, while the port is configured).
pub fn port_stats(id: u16) -> PortStats {
    let mut st = dpdk_sys::rte_eth_stats::default();
    // SAFETY: valid out-parameter; an unknown port id only makes DPDK return an error
    // (the zeroed counters are then returned).
    unsafe { dpdk_sys::rte_eth_stats_get(id, &mut st) };
    PortStats {
        rx: st.ipackets,
        tx: st.opackets,
        rx_bytes: st.ibytes,
        tx_bytes: st.obytes,
        imissed: st.imissed,
        ierrors: st.ierrors,
        oerrors: st.oerrors,
        rx_nombuf: st.rx_nombuf,
    }
}
