//! What the agent records in the kernel beside the policy: which store's
//! state the pinned data plane enforces, and how far into it. Read by the
//! next agent before it changes anything: a store that is new, another one,
//! or behind what the kernel enforces (a mistyped `--store`, a truncated
//! database, a lost write-ahead log) is refused instead of wiping the policy
//! in force. Never read by the programs.

/// The record (array `maps::AGENT`, index 0). All zero: nothing recorded
/// (maps made fresh, or by an agent that did not record).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AgentRecord {
    /// How many commits the store held when its state was put in force.
    pub generation: u64,
    /// The store's identity, made with the store.
    pub store_id: [u8; 16],
    /// The network namespace's cookie (`SO_NETNS_COOKIE`, never reused while
    /// the host runs): pins are named after the namespace's inode, which the
    /// kernel hands out again once a namespace is gone, so this tells the
    /// pins of a dead namespace from the live one's.
    pub netns_cookie: u64,
}

const _: () = assert!(size_of::<AgentRecord>() == 32);
