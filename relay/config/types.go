package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the file as a Go duration string
// ("90s", "5m", "4h30m") or with a "d" unit for days of 24 hours ("5d",
// "1d12h").
type Duration struct {
	time.Duration
}

// UnmarshalText parses a duration string; see Duration.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := parseDuration(string(text))
	if err != nil {
		return fmt.Errorf("%q is not a duration (%w): %s", text, err, durationHint)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration like String.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// String formats the duration as time.Duration does, without zero minutes
// and seconds at the end: "5m", "120h", "1h30m", "1m30s", "1.5s".
func (d Duration) String() string {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

const durationHint = `write a number and a unit, such as "90s", "5m", "4h" or "5d"`

// parseDuration is time.ParseDuration plus the unit "d" (24h). The error
// says what is wrong, without repeating the input.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	body := s
	neg := false
	if body[0] == '-' || body[0] == '+' {
		neg = body[0] == '-'
		body = body[1:]
	}
	// Take out the "<number>d" parts; time.ParseDuration parses the rest.
	var days float64
	var rest strings.Builder
	for body != "" {
		i := 0
		for i < len(body) && (body[i] == '.' || '0' <= body[i] && body[i] <= '9') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("expected a number at %q", body)
		}
		num := body[:i]
		j := i
		for j < len(body) && (body[j] < '0' || body[j] > '9') && body[j] != '.' {
			j++
		}
		unit := body[i:j]
		body = body[j:]
		switch unit {
		case "d":
			n, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("bad number %q", num)
			}
			days += n
		case "ns", "us", "µs", "μs", "ms", "s", "m", "h":
			rest.WriteString(num + unit)
		case "":
			if s != "0" {
				return 0, fmt.Errorf("%s has no unit", num)
			}
			rest.WriteString(num)
		default:
			return 0, fmt.Errorf("unknown unit %q", unit)
		}
	}
	var d time.Duration
	if rest.Len() > 0 {
		v, err := time.ParseDuration(rest.String())
		if err != nil {
			return 0, errors.New("bad number or out of range")
		}
		d = v
	}
	dayNanos := days * float64(24*time.Hour)
	if dayNanos+float64(d) >= math.MaxInt64 {
		return 0, errors.New("too long")
	}
	d += time.Duration(dayNanos)
	if neg {
		d = -d
	}
	return d, nil
}

// Size is a number of bytes, written in the file as an integer or as a
// string with a unit: binary "512KiB", "50MiB", "1GiB", "1TiB" or decimal
// "50KB", "50MB", "1GB", "1TB"; "B" or no unit means bytes.
type Size int64

// Units of Size.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

// UnmarshalText parses a size; see Size.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := parseSize(string(text))
	if err != nil {
		return fmt.Errorf("%q is not a size (%w): %s", text, err, sizeHint)
	}
	*s = v
	return nil
}

// MarshalText formats the size with the largest binary unit that divides it
// ("50MiB"), or as a plain number of bytes.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String formats the size like MarshalText.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"TiB", 1 << 40}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

const sizeHint = `write a number of bytes or a number and a unit, such as "512KiB", "50MiB", "1GiB" or "50MB"`

// parseSize parses the text of a Size. The error says what is wrong,
// without repeating the input.
func parseSize(text string) (Size, error) {
	s := strings.TrimSpace(text)
	i := 0
	for i < len(s) && (s[i] == '.' || s[i] == '_' || s[i] == '-' || s[i] == '+' || '0' <= s[i] && s[i] <= '9') {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if num == "" {
		return 0, errors.New("no number")
	}
	var mult int64
	switch strings.ToLower(unit) {
	case "", "b":
		mult = 1
	case "kib":
		mult = 1 << 10
	case "mib":
		mult = 1 << 20
	case "gib":
		mult = 1 << 30
	case "tib":
		mult = 1 << 40
	case "kb":
		mult = 1e3
	case "mb":
		mult = 1e6
	case "gb":
		mult = 1e9
	case "tb":
		mult = 1e12
	default:
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	if strings.HasPrefix(num, "-") {
		return 0, errors.New("negative")
	}
	num = strings.ReplaceAll(num, "_", "")
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return 0, errors.New("too large")
		}
		return Size(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", num)
	}
	if f*float64(mult) >= math.MaxInt64 {
		return 0, errors.New("too large")
	}
	return Size(f * float64(mult)), nil
}
