//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: the common 8-byte header
//! (type, code, checksum, 4 bytes of type-specific data; identifier/sequence for echo).
//! ICMPv4's checksum covers the message only; ICMPv6's adds the IPv6 pseudo-header.

use super::{be16, checksum, ip_proto, put16};
use crate::dissect::Malformed;

/// ICMPv4 message types used here.
pub mod v4_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMPv6 message types used here.
pub mod v6_type {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

macro_rules! icmp_common {
    ($name:ident, $err:expr) => {
        impl<T: AsRef<[u8]>> $name<T> {
            pub const HEADER_LEN: usize = 8;

            #[inline(always)]
            pub fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Fails when shorter than the 8-byte header.
            #[inline(always)]
            pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
                if buffer.as_ref().len() < Self::HEADER_LEN {
                    return Err($err);
                }
                Ok($name { buffer })
            }

            #[inline(always)]
            pub fn into_inner(self) -> T {
                self.buffer
            }

            #[inline(always)]
            pub fn msg_type(&self) -> u8 {
                self.buffer.as_ref()[0]
            }

            #[inline(always)]
            pub fn code(&self) -> u8 {
                self.buffer.as_ref()[1]
            }

            #[inline(always)]
            pub fn checksum(&self) -> u16 {
                be16(self.buffer.as_ref(), 2)
            }

            /// Echo identifier (bytes 4..6); meaningful for echo request/reply.
            #[inline(always)]
            pub fn echo_ident(&self) -> u16 {
                be16(self.buffer.as_ref(), 4)
            }

            /// Echo sequence number (bytes 6..8); meaningful for echo request/reply.
            #[inline(always)]
            pub fn echo_seq(&self) -> u16 {
                be16(self.buffer.as_ref(), 6)
            }

            /// Data after the 8-byte header.
            #[inline(always)]
            pub fn payload(&self) -> &[u8] {
                &self.buffer.as_ref()[Self::HEADER_LEN..]
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            #[inline(always)]
            pub fn set_msg_type(&mut self, t: u8) {
                self.buffer.as_mut()[0] = t;
            }

            #[inline(always)]
            pub fn set_code(&mut self, c: u8) {
                self.buffer.as_mut()[1] = c;
            }

            #[inline(always)]
            pub fn set_checksum(&mut self, c: u16) {
                put16(self.buffer.as_mut(), 2, c)
            }

            #[inline(always)]
            pub fn set_echo_ident(&mut self, id: u16) {
                put16(self.buffer.as_mut(), 4, id)
            }

            #[inline(always)]
            pub fn set_echo_seq(&mut self, seq: u16) {
                put16(self.buffer.as_mut(), 6, seq)
            }

            #[inline(always)]
            pub fn payload_mut(&mut self) -> &mut [u8] {
                &mut self.buffer.as_mut()[Self::HEADER_LEN..]
            }
        }
    };
}

/// View over an ICMPv4 message (the buffer must be exactly the message for checksums).
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

icmp_common!(Icmpv4Packet, Malformed::IcmpTruncated);

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Echo request (8) or echo reply (0).
    #[inline(always)]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), v4_type::ECHO_REQUEST | v4_type::ECHO_REPLY)
    }

    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::compute(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// View over an ICMPv6 message (the buffer must be exactly the message for checksums).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

icmp_common!(Icmpv6Packet, Malformed::Icmpv6Truncated);

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Echo request (128) or echo reply (129).
    #[inline(always)]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), v6_type::ECHO_REQUEST | v6_type::ECHO_REPLY)
    }

    #[inline]
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        checksum::l4_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    #[inline]
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::l4_v6(src, dst, ip_proto::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_icmpv4_windows_ping() {
        // Windows `ping` echo request, id 1 seq 5: on-the-wire checksum 0x4d56.
        let mut m = vec![0x08, 0x00, 0x4d, 0x56, 0x00, 0x01, 0x00, 0x05];
        m.extend_from_slice(b"abcdefghijklmnopqrstuvwabcdefghi");
        let mut p = Icmpv4Packet::new_checked(&mut m[..]).unwrap();
        assert!(p.verify_checksum());
        assert!(p.is_echo());
        assert_eq!((p.msg_type(), p.code(), p.echo_ident(), p.echo_seq()), (8, 0, 1, 5));
        assert_eq!(p.payload().len(), 32);
        p.set_checksum(0);
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x4d56);
        p.set_msg_type(v4_type::ECHO_REPLY);
        assert!(p.is_echo());
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x5556);
        p.set_msg_type(v4_type::DEST_UNREACHABLE);
        p.set_code(3);
        assert!(!p.is_echo());
        assert_eq!(
            Icmpv4Packet::new_checked(&m[..7]).unwrap_err(),
            Malformed::IcmpTruncated
        );
    }

    #[test]
    fn wire_icmpv6_echo_checksum() {
        // fe80::1 -> fe80::2 echo request id 0x1234 seq 1 "ping6": checksum 0x5bad
        // (computed with an independent Python implementation).
        let s = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let d = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut m = vec![0u8; 8];
        m.extend_from_slice(b"ping6");
        let mut p = Icmpv6Packet::new_checked(&mut m[..]).unwrap();
        p.set_msg_type(v6_type::ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(1);
        p.fill_checksum(&s, &d);
        assert_eq!(p.checksum(), 0x5bad);
        assert!(p.verify_checksum(&s, &d));
        assert!(p.is_echo());
        p.payload_mut()[0] = b'P';
        assert!(!p.verify_checksum(&s, &d));
        p.set_msg_type(v6_type::NEIGHBOR_SOLICIT);
        assert!(!p.is_echo());
        assert_eq!(
            Icmpv6Packet::new_checked(&m[..7]).unwrap_err(),
            Malformed::Icmpv6Truncated
        );
    }
}
