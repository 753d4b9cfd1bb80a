package tlsrpt

import (
	"slices"
	"time"
)

// Report is a validated TLS report (RFC 8460 §4.4). Parse fills it; the
// JSON field names are those of the RFC, so that a Report marshals back to
// the report format (plus Warnings).
type Report struct {
	OrganizationName string    `json:"organization-name"`
	DateRange        DateRange `json:"date-range"`
	ContactInfo      string    `json:"contact-info"`
	ReportID         string    `json:"report-id"`
	// Policies has at least one element and at most MaxPolicies.
	Policies []PolicyResult `json:"policies"`
	// Warnings lists what Parse accepted but flagged, one line each with
	// the field it concerns, for example a result type that RFC 8460 §4.3
	// does not define. It is not part of the RFC format.
	Warnings []string `json:"warnings,omitempty"`
}

// DateRange is the period a report covers (RFC 8460 §4.1). Times without
// a zone in the report are taken as UTC.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is one element of "policies": a policy the sender applied
// and the sessions it counted under it (RFC 8460 §4.4).
type PolicyResult struct {
	Policy         Policy          `json:"policy"`
	Summary        SessionCounts   `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyType is the "policy-type" of a policy (RFC 8460 §4.4).
type PolicyType string

// The policy types of RFC 8460 §4.4.
const (
	PolicySTS           PolicyType = "sts"
	PolicyTLSA          PolicyType = "tlsa"
	PolicyNoPolicyFound PolicyType = "no-policy-found"
)

// Policy describes the policy a sender applied.
type Policy struct {
	Type PolicyType `json:"policy-type"`
	// String is the policy as the sender saw it: MTA-STS policy lines or
	// TLSA records. Optional.
	String []string `json:"policy-string,omitempty"`
	// Domain is the policy domain, lower-cased and without a trailing dot.
	// It may be empty for no-policy-found (a real-world quirk).
	Domain string `json:"policy-domain,omitempty"`
	// MXHost lists the MX host patterns of an MTA-STS policy. The report
	// may give a string or an array; both end up here.
	MXHost []string `json:"mx-host,omitempty"`
}

// SessionCounts is the "summary" of a policy: counts of TLS sessions.
type SessionCounts struct {
	TotalSuccessful int64 `json:"total-successful-session-count"`
	TotalFailure    int64 `json:"total-failure-session-count"`
}

// ResultType is the "result-type" of a failure detail (RFC 8460 §4.3).
type ResultType string

// The result types of RFC 8460 §4.3.
const (
	// §4.3.1 negotiation failures
	ResultSTARTTLSNotSupported    ResultType = "starttls-not-supported"
	ResultCertificateHostMismatch ResultType = "certificate-host-mismatch"
	ResultCertificateExpired      ResultType = "certificate-expired"
	ResultCertificateNotTrusted   ResultType = "certificate-not-trusted"
	ResultValidationFailure       ResultType = "validation-failure"
	// §4.3.2.1 DANE policy failures
	ResultTLSAInvalid   ResultType = "tlsa-invalid"
	ResultDNSSECInvalid ResultType = "dnssec-invalid"
	ResultDANERequired  ResultType = "dane-required"
	// §4.3.2.2 MTA-STS policy failures
	ResultSTSPolicyFetchError ResultType = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid    ResultType = "sts-policy-invalid"
	ResultSTSWebPKIInvalid    ResultType = "sts-webpki-invalid"
)

// Known reports whether t is one of the result types of RFC 8460 §4.3.
// Parse keeps failure details with other result types (the IANA registry
// may grow, and a report is worth more than a strict refusal) and adds a
// warning for them.
func (t ResultType) Known() bool {
	switch t {
	case ResultSTARTTLSNotSupported, ResultCertificateHostMismatch, ResultCertificateExpired,
		ResultCertificateNotTrusted, ResultValidationFailure,
		ResultTLSAInvalid, ResultDNSSECInvalid, ResultDANERequired,
		ResultSTSPolicyFetchError, ResultSTSPolicyInvalid, ResultSTSWebPKIInvalid:
		return true
	}
	return false
}

// FailureDetail is one element of "failure-details" (RFC 8460 §4.4). All
// fields but ResultType and FailedSessionCount are optional and may be
// empty.
type FailureDetail struct {
	ResultType            ResultType `json:"result-type"`
	SendingMTAIP          string     `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string     `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo       string     `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string     `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64      `json:"failed-session-count"`
	AdditionalInformation string     `json:"additional-information,omitempty"`
	FailureReasonCode     string     `json:"failure-reason-code,omitempty"`
}

// PolicyDomains returns the distinct non-empty policy domains of r in the
// order they first appear.
func (r *Report) PolicyDomains() []string {
	var out []string
	for _, p := range r.Policies {
		if d := p.Policy.Domain; d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// Totals returns the successful and failed session counts summed over all
// policies. The sums cannot overflow: each count is at most MaxCount and
// there are at most MaxPolicies policies.
func (r *Report) Totals() (successes, failures int64) {
	for _, p := range r.Policies {
		successes += p.Summary.TotalSuccessful
		failures += p.Summary.TotalFailure
	}
	return successes, failures
}
