//! The templates this sink exports: which information elements, in which
//! order and length, under which template id. The data record encoder
//! (`encode`) writes the fields in exactly this order.
//!
//! IANA elements (numbers from the IANA "IPFIX Information Elements"
//! registry) carry what a collector already understands; what IANA has no
//! element for (cloud ids, the rule, the log-status) is enterprise-specific
//! under the configured Private Enterprise Number (RFC 7011 §3.2), as
//! variable-length strings.

/// Template ids start at 256 (RFC 7011 §3.4.1: 0–255 are set ids).
pub const TEMPLATE_FLOW_V4: u16 = 256;
pub const TEMPLATE_FLOW_V6: u16 = 257;
pub const TEMPLATE_FLOW_V4_NAT: u16 = 258;
pub const TEMPLATE_FLOW_V6_NAT: u16 = 259;
/// NODATA and SKIPDATA: no flow elements at all (see the README).
pub const TEMPLATE_STATUS: u16 = 260;

/// The set id of a Template Set (RFC 7011 §3.3.2).
pub const TEMPLATE_SET_ID: u16 = 2;
/// The length of a variable-length field in a template (RFC 7011 §7).
pub const VARIABLE_LENGTH: u16 = 65535;
/// The enterprise bit of an element id (RFC 7011 §3.2).
const ENTERPRISE_BIT: u16 = 0x8000;

// IANA information elements.
pub const OCTET_DELTA_COUNT: u16 = 1;
pub const PACKET_DELTA_COUNT: u16 = 2;
pub const PROTOCOL_IDENTIFIER: u16 = 4;
pub const SOURCE_TRANSPORT_PORT: u16 = 7;
pub const SOURCE_IPV4_ADDRESS: u16 = 8;
pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
pub const SOURCE_IPV6_ADDRESS: u16 = 27;
pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
pub const FLOW_DIRECTION: u16 = 61;
pub const FORWARDING_STATUS: u16 = 89;
pub const FLOW_START_MILLISECONDS: u16 = 152;
pub const FLOW_END_MILLISECONDS: u16 = 153;
pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
pub const POST_NAT_DESTINATION_IPV4_ADDRESS: u16 = 226;
pub const POST_NAT_SOURCE_IPV6_ADDRESS: u16 = 281;
pub const POST_NAT_DESTINATION_IPV6_ADDRESS: u16 = 282;

// Enterprise-specific elements under the configured PEN: the README's
// table. Numbers are part of the exported format: append, never renumber.
pub const ENT_ENI_ID: u16 = 1;
pub const ENT_VPC_ID: u16 = 2;
pub const ENT_VSWITCH_ID: u16 = 3;
pub const ENT_VM_ID: u16 = 4;
pub const ENT_ACCOUNT_ID: u16 = 5;
pub const ENT_RULE: u16 = 6;
pub const ENT_LOG_STATUS: u16 = 7;

/// flowDirection (RFC 5102): 0 ingress, 1 egress.
pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;
/// forwardingStatus (RFC 7270 §4.12, IANA "forwardingStatus" registry):
/// the two high bits are the status (01 forwarded, 10 dropped), the rest
/// the reason. Sent in one byte: the registry's own encoding (and NetFlow
/// v9's), which nfdump and pmacct decode.
pub const FORWARDED_UNKNOWN: u8 = 64;
/// "Dropped, ACL deny": a firewall rule (the stand-in for a security
/// group) dropped the packets.
pub const DROPPED_ACL_DENY: u8 = 129;

/// One field specifier of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub id: u16,
    pub length: u16,
    pub enterprise: bool,
}

const fn iana(id: u16, length: u16) -> Field {
    Field {
        id,
        length,
        enterprise: false,
    }
}

const fn ent(id: u16) -> Field {
    Field {
        id,
        length: VARIABLE_LENGTH,
        enterprise: true,
    }
}

/// The record's ids, rule and log-status, in this order, in every template.
const IDS: [Field; 7] = [
    ent(ENT_ENI_ID),
    ent(ENT_VPC_ID),
    ent(ENT_VSWITCH_ID),
    ent(ENT_VM_ID),
    ent(ENT_ACCOUNT_ID),
    ent(ENT_RULE),
    ent(ENT_LOG_STATUS),
];

/// The fields of a flow template after the addresses and NAT addresses.
const FLOW_BODY: [Field; 9] = [
    iana(SOURCE_TRANSPORT_PORT, 2),
    iana(DESTINATION_TRANSPORT_PORT, 2),
    iana(PROTOCOL_IDENTIFIER, 1),
    iana(PACKET_DELTA_COUNT, 8),
    iana(OCTET_DELTA_COUNT, 8),
    iana(FLOW_START_MILLISECONDS, 8),
    iana(FLOW_END_MILLISECONDS, 8),
    iana(FLOW_DIRECTION, 1),
    iana(FORWARDING_STATUS, 1),
];

/// The address family of a flow template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The fields of each template, in wire order.
pub fn fields(template_id: u16) -> Vec<Field> {
    let mut f = Vec::with_capacity(20);
    let (family, nat) = match template_id {
        TEMPLATE_FLOW_V4 => (Family::V4, false),
        TEMPLATE_FLOW_V6 => (Family::V6, false),
        TEMPLATE_FLOW_V4_NAT => (Family::V4, true),
        TEMPLATE_FLOW_V6_NAT => (Family::V6, true),
        _ => {
            f.push(iana(FLOW_START_MILLISECONDS, 8));
            f.push(iana(FLOW_END_MILLISECONDS, 8));
            f.extend(IDS);
            return f;
        }
    };
    match family {
        Family::V4 => {
            f.push(iana(SOURCE_IPV4_ADDRESS, 4));
            f.push(iana(DESTINATION_IPV4_ADDRESS, 4));
            if nat {
                f.push(iana(POST_NAT_SOURCE_IPV4_ADDRESS, 4));
                f.push(iana(POST_NAT_DESTINATION_IPV4_ADDRESS, 4));
            }
        }
        Family::V6 => {
            f.push(iana(SOURCE_IPV6_ADDRESS, 16));
            f.push(iana(DESTINATION_IPV6_ADDRESS, 16));
            if nat {
                f.push(iana(POST_NAT_SOURCE_IPV6_ADDRESS, 16));
                f.push(iana(POST_NAT_DESTINATION_IPV6_ADDRESS, 16));
            }
        }
    }
    f.extend(FLOW_BODY);
    f.extend(IDS);
    f
}

/// Every template, in the order they are announced.
pub const ALL: [u16; 5] = [
    TEMPLATE_FLOW_V4,
    TEMPLATE_FLOW_V6,
    TEMPLATE_FLOW_V4_NAT,
    TEMPLATE_FLOW_V6_NAT,
    TEMPLATE_STATUS,
];

/// Appends the template record of `template_id` (RFC 7011 §3.4.1) to `out`.
pub fn write_template_record(out: &mut Vec<u8>, template_id: u16, pen: u32) {
    let fields = fields(template_id);
    out.extend_from_slice(&template_id.to_be_bytes());
    out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for f in fields {
        if f.enterprise {
            out.extend_from_slice(&(f.id | ENTERPRISE_BIT).to_be_bytes());
            out.extend_from_slice(&f.length.to_be_bytes());
            out.extend_from_slice(&pen.to_be_bytes());
        } else {
            out.extend_from_slice(&f.id.to_be_bytes());
            out.extend_from_slice(&f.length.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_records_are_encoded_as_rfc_7011_says() {
        let mut out = Vec::new();
        write_template_record(&mut out, TEMPLATE_STATUS, 32473);
        let mut expected = vec![0x01, 0x04, 0x00, 0x09];
        expected.extend_from_slice(&[0, 152, 0, 8, 0, 153, 0, 8]);
        for id in 1u8..=7 {
            expected.extend_from_slice(&[0x80, id, 0xff, 0xff, 0x00, 0x00, 0x7e, 0xd9]);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn flow_templates_carry_their_family_and_nat_elements() {
        let ids = |t| fields(t).iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(&ids(TEMPLATE_FLOW_V4)[..3], &[8, 12, 7]);
        assert_eq!(&ids(TEMPLATE_FLOW_V6)[..3], &[27, 28, 7]);
        assert_eq!(&ids(TEMPLATE_FLOW_V4_NAT)[..5], &[8, 12, 225, 226, 7]);
        assert_eq!(&ids(TEMPLATE_FLOW_V6_NAT)[..5], &[27, 28, 281, 282, 7]);
        assert_eq!(fields(TEMPLATE_FLOW_V4).len(), 2 + 9 + 7);
        assert_eq!(fields(TEMPLATE_FLOW_V6_NAT).len(), 4 + 9 + 7);
    }
}
