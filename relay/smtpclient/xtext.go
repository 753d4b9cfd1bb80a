package smtpclient

import "strings"

const upperHex = "0123456789ABCDEF"

// xtext encodes s per RFC 3461 §4: octets 33..126 other than '+' and '='
// stand for themselves, every other octet becomes "+XX" (upper-case hex).
func xtext(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('+')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0x0f])
	}
	return b.String()
}

// utf8AddrXtext encodes s as utf-8-addr-xtext (RFC 6533 §3): printable
// ASCII other than '+', '=' and '\' stands for itself, every other
// character becomes "\x{HEX}" with its Unicode code point. Invalid UTF-8
// octets are encoded as U+FFFD by the range loop.
func utf8AddrXtext(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r >= '!' && r <= '~' && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		b.WriteString(`\x{`)
		var tmp [8]byte
		i := len(tmp)
		for v := uint32(r); ; v >>= 4 {
			i--
			tmp[i] = upperHex[v&0xf]
			if v < 0x10 {
				break
			}
		}
		if len(tmp)-i < 2 { // RFC 6533 wants at least two hex digits
			i--
			tmp[i] = '0'
		}
		b.Write(tmp[i:])
		b.WriteByte('}')
	}
	return b.String()
}
