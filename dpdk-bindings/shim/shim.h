/* Headers bindgen sees, and the shim: out-of-line copies of DPDK's
 * static-inline functions and macros that Rust needs. Each call is a real
 * call: fine per burst, avoided per packet. */
#ifndef HAKA_DPDK_SHIM_H
#define HAKA_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_log.h>
#include <rte_dev.h>
#include <rte_bus.h>
#include <rte_telemetry.h>
#include <rte_pdump.h>

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
void shim_pktmbuf_free(struct rte_mbuf *m);
void shim_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned int n);
struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp);
int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned int n);
unsigned shim_lcore_id(void);
int shim_errno(void);
uint64_t shim_rdtsc(void);
uint64_t shim_tsc_hz(void);
unsigned shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned shim_ring_count(const struct rte_ring *r);
unsigned shim_mempool_in_use(const struct rte_mempool *mp);
unsigned shim_mempool_avail(const struct rte_mempool *mp);
int shim_pktmbuf_is_contiguous(const struct rte_mbuf *m);

#endif
