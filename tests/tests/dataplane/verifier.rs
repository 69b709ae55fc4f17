//! The programs must pass the verifier with room to spare: each decision
//! step added inlines into every program, and the verifier's budget (one
//! million instructions processed per program) is a hard wall that only
//! shows when the object is loaded. This names the margin while there is one.

use sg_agent::dataplane::{Dataplane, Limits};
use sg_common::maps::{PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP};

/// The verifier's budget per program (`BPF_COMPLEXITY_LIMIT_INSNS`).
const BUDGET: u32 = 1_000_000;

#[test]
fn every_program_verifies_within_the_budget_with_room_to_spare() {
    // As the agent loads them, and with the tests' flags, whose branches
    // the verifier then walks too.
    for (how, dp) in [
        ("agent", Dataplane::load()),
        ("tests", Dataplane::load_for_tests(Limits::default())),
    ] {
        within_budget(how, &mut dp.expect("load"));
    }
}

fn within_budget(how: &str, dp: &mut Dataplane) {
    dp.tc_ingress().expect("TC ingress loads");
    for name in [PROG_XDP, PROG_TC_EGRESS, PROG_TC_INGRESS] {
        let info = dp
            .ebpf()
            .program(name)
            .expect("program")
            .info()
            .expect("program info");
        let processed = info
            .verified_instruction_count()
            .expect("kernel reports it");
        println!("{name} ({how}): {processed} instructions processed by the verifier");
        assert!(
            processed < BUDGET * 9 / 10,
            "{name} ({how}): {processed} of the verifier's {BUDGET}: too close to the wall"
        );
    }
}
