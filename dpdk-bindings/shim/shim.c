#include "shim.h"

uint16_t shim_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }

uint16_t shim_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }

void shim_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void shim_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned int n) { rte_pktmbuf_free_bulk(pkts, n); }

struct rte_mbuf *shim_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int shim_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned int n)
{ return rte_pktmbuf_alloc_bulk(mp, pkts, n); }

unsigned shim_lcore_id(void) { return rte_lcore_id(); }

int shim_errno(void) { return rte_errno; }

uint64_t shim_rdtsc(void) { return rte_rdtsc(); }

uint64_t shim_tsc_hz(void) { return rte_get_tsc_hz(); }

unsigned shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{ return rte_ring_enqueue_burst(r, objs, n, NULL); }

unsigned shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{ return rte_ring_dequeue_burst(r, objs, n, NULL); }

unsigned shim_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

unsigned shim_mempool_in_use(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

unsigned shim_mempool_avail(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

int shim_pktmbuf_is_contiguous(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }
