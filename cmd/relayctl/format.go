package main

import (
	"fmt"
	"strings"
	"time"
	"unicode"
)

// timeLayout formats absolute times in tables.
const timeLayout = "2006-01-02 15:04:05 MST"

// fmtTime formats t in local time, "-" when zero.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}

// fmtAge formats a duration compactly with at most two units: "45s",
// "12m", "3h12m", "2d4h".
func fmtAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		if m := int((d - time.Duration(h)*time.Hour).Minutes()); m > 0 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	days := int(d.Hours()) / 24
	if h := int(d.Hours()) % 24; h > 0 {
		return fmt.Sprintf("%dd%dh", days, h)
	}
	return fmt.Sprintf("%dd", days)
}

// fmtNext formats a next-attempt time relative to now: "-" when there is
// none, "now" when due, else "in 4m".
func fmtNext(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "-"
	case !t.After(now):
		return "now"
	}
	return "in " + fmtAge(t.Sub(now))
}

// fmtSize formats a byte count with binary units.
func fmtSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// sender formats an envelope sender, "<>" for the null reverse path.
func sender(from string) string {
	if from == "" {
		return "<>"
	}
	return clean(from)
}

// orDash returns s made printable, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return clean(s)
}

// yesNo formats a flag.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// clean makes text from the network safe for one table cell: line breaks
// and tabs become spaces and other control characters (which could drive
// the terminal) are shown escaped.
func clean(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == '\r' || r == '\n' || r == '\t' || r == ' ':
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		case r == unicode.ReplacementChar:
			b.WriteRune(r)
		case unicode.IsControl(r) || !unicode.IsPrint(r):
			fmt.Fprintf(&b, "%U", r)
		default:
			b.WriteRune(r)
		}
		space = false
	}
	return strings.TrimSpace(b.String())
}

// truncate shortens s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// plural returns "1 message" or "2 messages".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
