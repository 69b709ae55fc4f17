//! The policy model (see SPEC.md §1–§3, §5). Filled in by the policy work.
