package deliver

import (
	"bytes"
	"testing"
	"time"

	"github.com/relaysec/relay/internal/testnet"
	"github.com/relaysec/relay/queue"
)

func TestMX01_DeliversToBestMX(t *testing.T) {
	f := newFixture(t)
	f.zone.Add(
		"dest.test. 300 IN MX 20 mx2.dest.test.",
		"dest.test. 300 IN MX 10 mx1.dest.test.",
		"mx1.dest.test. 300 IN A 127.0.0.11",
		"mx2.dest.test. 300 IN A 127.0.0.12",
	)
	mx1 := f.receiver("127.0.0.11", testnet.SMTPOptions{})
	mx2 := f.receiver("127.0.0.12", testnet.SMTPOptions{})
	f.start()
	body := "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
	m := f.submit("a@example.org", body, "bob@dest.test")
	got := mx1.WaitMessages(t, 1, 10*time.Second)
	if !bytes.Equal(got[0].Data, []byte(body)) || got[0].From != "a@example.org" || got[0].To[0] != "bob@dest.test" {
		t.Fatalf("received %+v", got[0])
	}
	if len(mx2.Messages()) != 0 {
		t.Fatal("lower-preference MX got mail")
	}
	if rec := f.waitAttempts(m.ID, 1); rec != nil {
		t.Fatalf("delivered message still queued: %+v", rec)
	}
	_ = queue.StateDelivered
}
