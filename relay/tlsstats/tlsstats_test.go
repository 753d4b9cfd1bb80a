package tlsstats

import (
	"path/filepath"
	"testing"
	"time"
)

func TestCountsPerDomainAndDaySurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tls-stats.db")
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	day1 := time.Date(2026, 11, 23, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	sessions := []Session{
		{Time: day1, PolicyDomain: "a.example", PolicyType: PolicyTLSA},
		{Time: day1, PolicyDomain: "a.example", PolicyType: PolicyTLSA},
		{Time: day1, PolicyDomain: "a.example", PolicyType: PolicyTLSA, ResultType: "validation-failure", ReceivingMX: "mx.a.example", ReceivingIP: "192.0.2.1"},
		{Time: day2, PolicyDomain: "a.example", PolicyType: PolicyTLSA, ResultType: "validation-failure", ReceivingMX: "mx.a.example", ReceivingIP: "192.0.2.1"},
		{Time: day1, PolicyDomain: "b.example", PolicyType: PolicySTS, ResultType: "certificate-expired", ReceivingMX: "mx.b.example"},
	}
	for _, s := range sessions[:3] {
		r.Record(s)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions[3:] {
		r.Record(s)
	}
	r.Record(sessions[2]) // merged into the stored failure group
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Query("2026-11-23", "2026-11-23", "a.example")
	if err != nil || len(got) != 1 {
		t.Fatalf("query = %+v, %v", got, err)
	}
	c := got[0]
	if c.Success != 2 || c.Failure != 2 || c.PolicyType != PolicyTLSA || len(c.Failures) != 1 || c.Failures[0].Count != 2 {
		t.Fatalf("counts %+v", c)
	}
	all, _ := r.Query("2026-11-23", "", "")
	if len(all) != 3 {
		t.Fatalf("all days and domains: %+v", all)
	}
}
