//! Compile-time checks shared by the numbered constants (`counter`,
//! `reason`): `const fn`s, so a slip fails the build of both sides rather
//! than showing up as a wrong label in the agent's tables.

/// Whether `numbers` are `first, first + 1, …` in order: dense, so every
/// number in their range has its entry, and distinct.
pub(crate) const fn dense(numbers: &[u32], first: u32) -> bool {
    let mut i = 0;
    while i < numbers.len() {
        if numbers[i] as usize != first as usize + i {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether every one of `numbers` is below `slots`.
pub(crate) const fn below(numbers: &[u32], slots: u32) -> bool {
    let mut i = 0;
    while i < numbers.len() {
        if numbers[i] >= slots {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether every name is non-empty and no name appears twice.
pub(crate) const fn names_distinct(names: &[&str]) -> bool {
    let mut i = 0;
    while i < names.len() {
        if names[i].is_empty() {
            return false;
        }
        let mut j = i + 1;
        while j < names.len() {
            if same(names[i], names[j]) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
