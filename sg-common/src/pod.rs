//! `aya::Pod` for every layout the agent reads or writes.

use crate::agent::AgentRecord;
use crate::conntrack::{SessionEntry, SessionKey};
use crate::policy::{
    AddrKeyV4, AddrKeyV6, BitsKey, FragFirst, FragKey, IfaceConfig, LastDecision, OwnAddrKey,
    PortBounds, RuleBits, RuleStats, Settings, TableMeta,
};

// SAFETY: each is #[repr(C)], Copy, made of integers and integer arrays, with
// explicit padding fields: every bit pattern is valid and none is uninitialised.
unsafe impl aya::Pod for RuleBits {}
unsafe impl aya::Pod for IfaceConfig {}
unsafe impl aya::Pod for TableMeta {}
unsafe impl aya::Pod for BitsKey {}
unsafe impl aya::Pod for PortBounds {}
unsafe impl aya::Pod for AddrKeyV4 {}
unsafe impl aya::Pod for AddrKeyV6 {}
unsafe impl aya::Pod for OwnAddrKey {}
unsafe impl aya::Pod for Settings {}
unsafe impl aya::Pod for FragKey {}
unsafe impl aya::Pod for FragFirst {}
unsafe impl aya::Pod for RuleStats {}
unsafe impl aya::Pod for LastDecision {}
unsafe impl aya::Pod for SessionKey {}
unsafe impl aya::Pod for SessionEntry {}
unsafe impl aya::Pod for AgentRecord {}
