//! The receiver's replay check (RFC 2747 §3, §4.2): a sliding window of the last
//! [`ReplayWindow::SIZE`] sequence numbers, like IPsec's anti-replay window (RFC 4303 §3.4.3).

/// The sequence numbers seen from one sender with one key: the highest, and which of the
/// [`SIZE`](Self::SIZE) numbers at and below it were seen. A number above the highest is
/// fresh; one inside the window is fresh once; one below it is refused (it may have been seen
/// and forgotten). RFC 2747 keeps "the last N sequence numbers received" so that messages
/// reordered in flight are still accepted: N is 64 here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i`: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// How many sequence numbers the window remembers.
    pub const SIZE: u64 = 64;

    /// A window that has seen `sequence` (and treats everything below it as seen).
    pub fn new(sequence: u64) -> ReplayWindow {
        ReplayWindow {
            highest: sequence,
            seen: u64::MAX,
        }
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `sequence` would be accepted (not seen, not too old).
    pub fn is_fresh(&self, sequence: u64) -> bool {
        if sequence > self.highest {
            return true;
        }
        let back = self.highest - sequence;
        back < Self::SIZE && self.seen & (1 << back) == 0
    }

    /// Records `sequence` if fresh; returns whether it was.
    pub fn accept(&mut self, sequence: u64) -> bool {
        if !self.is_fresh(sequence) {
            return false;
        }
        if sequence > self.highest {
            let ahead = sequence - self.highest;
            self.seen = if ahead >= Self::SIZE {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = sequence;
        } else {
            self.seen |= 1 << (self.highest - sequence);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reordered_numbers_pass_once_and_old_ones_never() {
        let mut w = ReplayWindow::new(100);
        assert!(!w.accept(100));
        assert!(!w.accept(99), "below the start counts as seen");
        assert!(w.accept(105));
        assert!(w.accept(103), "reordered within the window");
        assert!(!w.accept(103), "replayed");
        assert!(w.accept(101));
        assert!(w.accept(200));
        assert!(!w.accept(105), "fell out of the window");
        assert!(w.accept(200 - 63));
        assert!(!w.accept(200 - 64));
        assert_eq!(w.highest(), 200);
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
    }
}
