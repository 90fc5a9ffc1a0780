//! CRUSH: placing a PG on OSDs from the cluster map alone, with straw2 buckets.
//!
//! Given the same [`ClusterMap`](crate::map::ClusterMap), every client, OSD and monitor
//! computes the same OSDs for a PG, without asking anyone. This module is that
//! computation.
//!
//! # The pieces
//!
//! * **Hash.** [`crush_hash3`]`(x, item, r)` and [`crush_hash2`] are the Jenkins
//!   96-bit mix ([`crate::pg`]'s `jenkins_mix`) applied in the rjenkins1 pattern that
//!   CRUSH uses: `h = 1315423911 ^ a ^ b ^ c`, constants `x = 231232`, `y = 1232`, then
//!   `mix(a,b,h) mix(c,x,h) mix(y,a,h) mix(b,x,h) mix(y,c,h)` (for two inputs:
//!   `mix(a,b,h) mix(x,a,h) mix(b,y,h)`), returning `h`. Golden vectors pin it.
//! * **Straw2.** A bucket picks the child with the highest draw
//!   `log2(u) / weight`, `u = (crush_hash3(x, child, r) + 1) / 2^32` in `(0, 1]`.
//!   Because each child's draw depends only on its own hash and weight, changing one
//!   child's weight only moves PGs to or from *that* child, never between the others:
//!   the property that keeps data movement proportional to the change. Weight 0 means
//!   never chosen.
//! * **Deterministic logarithm.** `f64::ln` comes from the platform's libm, which is not
//!   required to round identically everywhere, and two OSDs disagreeing on a placement
//!   is a correctness bug. So [`log2_fixed`] computes `log2` in 32.32 fixed point with
//!   integer operations only (leading-zero count for the integer part, repeated
//!   squaring for 32 fraction bits), and the draw divides it by the 16.16 fixed-point
//!   weight in `i128`. (log2 instead of ln only scales every draw by the same constant.)
//!   The whole 32-bit hash is used, not Ceph's 16 bits, so ties are rarer; a tie goes to
//!   the child that sorts first.
//! * **Descent.** One draw with rank `r` walks from the root, choosing a child by
//!   straw2 at each level until it reaches a bucket of the pool's failure-domain type,
//!   then walks on from there to one OSD with a fixed rank (chooseleaf), so the OSD
//!   a PG uses inside a domain does not depend on the domain's rank.
//! * **Exclusion instead of retries.** Ceph retries a draw with a new `r` when it hits
//!   a failure domain the PG already has, up to `choose_total_tries` (50) times, and
//!   gives up ("bad mapping") when the tries run out, which happens when a PG needs
//!   nearly every domain (k+m = number of hosts). Here a chosen domain's weight is
//!   taken out of the tree for the rest of that PG's computation (from the domain and
//!   every bucket above it), so the next rank draws straw2 among the domains still
//!   available, in proportion to their weight. There are no collisions, so no retry
//!   bound is needed: a PG gets `size` OSDs whenever `size` usable domains exist, and
//!   the computation takes at most one draw per rank plus one per rejected OSD.
//!
//! # Two phases: CRUSH weights, then in/out
//!
//! A PG's input is `x = crush_hash2(seed, pool)`. Phase one chooses up to `size`
//! distinct failure domains and one OSD under each from CRUSH weights alone, ignoring
//! in/out and reweight. Phase two drops each chosen OSD that is out, or that its
//! reweight rejects for this PG (`crush_hash2(x, osd) & 0xffff >= reweight * 0x10000`,
//! the same per-PG test as Ceph's `is_out`), and refills the gaps with ranks phase one
//! never uses (`size + i`), excluding the kept OSDs' domains and every rejected OSD;
//! a refill draw that hits another rejected OSD excludes it and draws again.
//!
//! Ceph instead rejects out OSDs inside its retry loop; then an out OSD changes the
//! collision history of *other* positions and can move PGs that never held it.
//! Splitting the phases gives exact guarantees, which the tests check:
//!
//! * marking an OSD out (or lowering its reweight) changes only PGs that held it, and
//!   in those only its own slot: for replicated pools the other OSDs keep their order
//!   and the replacement is appended (the next OSD becomes primary, and it has the
//!   data); for erasure-coded pools every other shard keeps its position;
//! * marking it in again restores the previous mapping exactly.
//!
//! # Rules
//!
//! * [`choose_firstn`] (replicated): an ordered list. Among the failure domains of one
//!   bucket every pick uses the same rank (0), so with the exclusions the picks are
//!   the order in which those domains finish one weighted "race" (each domain's draw
//!   is fixed for the PG). That makes the *set* stable: a weight change swaps at most
//!   one domain of that bucket in or out. The buckets above the failure domains (zones
//!   when the failure domain is `host`) are drawn with rank `i` for the `i`-th pick,
//!   since re-using one draw there would keep choosing the same zone and skew the
//!   weights. An OSD lost in phase two shifts the later ones forward; refills use
//!   ranks `size..2 * size` above the domains.
//! * [`choose_indep`] (erasure coding): fixed positions; position `i` is drawn with
//!   rank `i` among the domains positions `0..i` did not take, so inserting a domain
//!   does not shift every later position as a single race would. Phase two refills a
//!   position in place (rank `size + i`). A position that cannot be filled is `None`;
//!   the others do not move.
//!
//! # Up set
//!
//! Down OSDs stay in the CRUSH result (so that a short outage moves no data) but
//! leave the up set: a replicated up set drops them and shifts, an erasure-coded one
//! puts `None` in their position. The primary is the first OSD of the up set. (The
//! acting set, which peering may override temporarily, is the OSD crate's business.)
//!
//! # What straw2 promises when an OSD is added
//!
//! A straw2 draw does not depend on the other items' weights. For replicated pools
//! with a flat choice (one zone and failure domain `host`, or one host and failure
//! domain `osd`), adding an OSD therefore changes each PG by at most one OSD: a new
//! host can only swap itself in for one domain, and a heavier existing host can only
//! swap itself in, bringing the OSD it picks (the new one or, about `1 / (n + 1)` of
//! the time with `n` equal OSDs, an old one). Data moves only into the host that
//! grew, and the share landing on the new OSD is about `w / W` (`w` its weight, `W`
//! the new total). The tests check all of this. With several zones or failure domain
//! `osd` across hosts the levels interact and a few PGs move one more shard.
//!
//! Erasure-coded PGs pay more: shards are positional, and when a new domain takes a
//! position, the domain it displaced may win a later position, which moves that shard
//! too. On 10 hosts of 4 OSDs, adding an OSD moves about 1.6 times the ideal number of
//! EC 4+2 shards; when k+m equals the number of hosts, about 2.5 to 3 times. Ceph's
//! indep rule has the same chains.
//!
//! Sampling `size` *distinct* domains in proportion to weight slightly favours light
//! domains over heavy ones (the "multi-pick anomaly"), and a domain heavier than
//! `1 / size` of the total cannot get its full share; with moderately even weights the
//! effect is a few percent.
//!
//! # Layout
//!
//! `hash` (the CRUSH hashes and the fixed-point logarithm), `choose` (straw2, the
//! descent with exclusions, the two rules), `placement` (a PG's input, phase two's
//! test, up set and primary: what daemons call) and `simulation` (the synthetic
//! clusters and reports of `lcpfs crush test`), each using only those before it.

mod choose;
mod hash;
mod placement;
mod simulation;

pub use choose::{choose_firstn, choose_indep};
pub use hash::{crush_hash2, crush_hash3, log2_fixed};
pub use placement::{
    CrushError, PgMapping, PoolPlacement, pg_mapping, pg_to_up_osds, placement_input, primary,
    share_a_pg,
};
pub use simulation::{
    Movement, OsdUtilization, SyntheticCluster, UtilizationReport, synthetic_map,
    utilization_report,
};
