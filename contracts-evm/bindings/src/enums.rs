//! The contracts' enums as Rust enums (not generated: `sol!` gives them as plain `uint8`).
//!
//! Each converts from the ABI's `u8` with `TryFrom` (a value the enum does not have is an [`UnknownValue`] naming the
//! enum and the value, never a default) and back with `u8::from`, and has one text form, [`as_str`](CheckpointStatus::as_str)
//! and `Display`, which is what the keeper's store and API carry. The market's `Outcome` is
//! `kronos_common::signals::Outcome` (the signals carry it), converted the same way there.

use std::fmt;

/// A value that a contract enum does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum, as the contract names it.
    pub kind: &'static str,
    pub value: u8,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has no value {}", self.kind, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// A text that is no stored form of a contract enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// The enum, as the contract names it.
    pub kind: &'static str,
    pub text: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has no value named {:?}", self.kind, self.text)
    }
}

impl std::error::Error for UnknownName {}

macro_rules! contract_enum {
    ($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $value:literal => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)+
        }

        impl $name {
            /// Every value, in the contract's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and API form.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl TryFrom<u8> for $name {
            type Error = UnknownValue;

            fn try_from(v: u8) -> Result<Self, UnknownValue> {
                match v {
                    $($value => Ok($name::$variant),)+
                    value => Err(UnknownValue { kind: $kind, value }),
                }
            }
        }

        /// From the stored form ([`as_str`](Self::as_str)).
        impl std::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    text => Err(UnknownName { kind: $kind, text: text.to_string() }),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

contract_enum! {
    /// `IKronosMarket.CheckpointStatus`: why a checkpoint's price can or cannot be used.
    CheckpointStatus ("IKronosMarket.CheckpointStatus") {
        None = 0 => "none",
        Valid = 1 => "valid",
        Stale = 2 => "stale",
        BadAnswer = 3 => "bad_answer",
        SequencerDown = 4 => "sequencer_down",
        SequencerGracePeriod = 5 => "sequencer_grace_period",
    }
}

contract_enum! {
    /// `IKronosMarket.CancelReason`: why a round was refunded (`Tie` is no longer emitted; it keeps its value).
    CancelReason ("IKronosMarket.CancelReason") {
        /// Never emitted with `RoundCancelled`.
        None = 0 => "none",
        LockPriceUnusable = 1 => "lock_price_unusable",
        ClosePriceUnusable = 2 => "close_price_unusable",
        Tie = 3 => "tie",
        OneSidedPool = 4 => "one_sided_pool",
        Expired = 5 => "expired",
    }
}

contract_enum! {
    /// `IKronosMarket.RoundState`: where a round with bets stands.
    RoundState ("IKronosMarket.RoundState") {
        None = 0 => "none",
        Open = 1 => "open",
        Settled = 2 => "settled",
        Cancelled = 3 => "cancelled",
    }
}

contract_enum! {
    /// `IKronosMarket.Position`: the side of a bet.
    Position ("IKronosMarket.Position") {
        None = 0 => "none",
        Up = 1 => "up",
        Down = 2 => "down",
    }
}

contract_enum! {
    /// `IPredictionRegistry.CommitStatus`: where a publisher's commitment for a round stands.
    CommitStatus ("IPredictionRegistry.CommitStatus") {
        None = 0 => "none",
        Committed = 1 => "committed",
        Revealed = 2 => "revealed",
        Expired = 3 => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T], len: u8)
    where
        T: Copy
            + PartialEq
            + fmt::Debug
            + fmt::Display
            + TryFrom<u8, Error = UnknownValue>
            + Into<u8>
            + std::str::FromStr<Err = UnknownName>,
    {
        assert_eq!(all.len(), len as usize);
        for (i, v) in all.iter().enumerate() {
            assert_eq!(T::try_from(i as u8), Ok(*v));
            assert_eq!((*v).into(), i as u8);
            assert_eq!(v.to_string().parse::<T>(), Ok(*v));
        }
        assert!("Valid".parse::<T>().is_err(), "only the stored form parses");
        let e = T::try_from(len).unwrap_err();
        assert_eq!(e.value, len);
        assert!(e.to_string().ends_with(&format!("has no value {len}")), "{e}");
    }

    #[test]
    fn every_enum_takes_the_contracts_values_and_refuses_others() {
        round_trips(CheckpointStatus::ALL, 6);
        round_trips(CancelReason::ALL, 6);
        round_trips(RoundState::ALL, 4);
        round_trips(Position::ALL, 3);
        round_trips(CommitStatus::ALL, 4);
        assert_eq!(CancelReason::try_from(9).unwrap_err().to_string(), "IKronosMarket.CancelReason has no value 9");
        assert_eq!(
            "fresh".parse::<CheckpointStatus>().unwrap_err().to_string(),
            "IKronosMarket.CheckpointStatus has no value named \"fresh\""
        );
    }

    /// The store and the API carry these texts: they must not change.
    #[test]
    fn the_stored_forms_are_fixed() {
        let s: Vec<_> = CheckpointStatus::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(s, ["none", "valid", "stale", "bad_answer", "sequencer_down", "sequencer_grace_period"]);
        let r: Vec<_> = CancelReason::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(r, ["none", "lock_price_unusable", "close_price_unusable", "tie", "one_sided_pool", "expired"]);
        assert_eq!(RoundState::Cancelled.as_str(), "cancelled");
        assert_eq!(Position::Down.as_str(), "down");
        assert_eq!(CommitStatus::Revealed.as_str(), "revealed");
    }
}
