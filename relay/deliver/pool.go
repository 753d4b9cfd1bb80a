package deliver

import (
	"context"
	"sync"
	"time"

	"github.com/relaysec/relay/relay/smtpclient"
)

// connPool keeps idle SMTP connections for reuse by later messages to the
// same host (checklist SMTP04) and bounds the connections open to one IP
// address, idle ones included.
type connPool struct {
	limit       int
	idleTimeout time.Duration

	mu    sync.Mutex
	open  map[string]int         // connections open per IP address
	idle  map[string][]*idleConn // idle connections per pool key
	wake  chan struct{}          // closed when a slot or connection frees up
	keyIP map[*idleConn]string   // ip of each idle connection
}

type idleConn struct {
	key    string
	client *smtpclient.Client
	timer  *time.Timer
}

func newConnPool(limit int, idleTimeout time.Duration) *connPool {
	return &connPool{
		limit:       limit,
		idleTimeout: idleTimeout,
		open:        map[string]int{},
		idle:        map[string][]*idleConn{},
		wake:        make(chan struct{}),
		keyIP:       map[*idleConn]string{},
	}
}

func (p *connPool) signal() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// get returns an idle connection for key when reuse is allowed, or
// reserves a slot for a new connection to ip (client nil): the caller
// dials and must later call put or done. It waits while ip is at its
// limit.
func (p *connPool) get(ctx context.Context, ip, key string, reuse bool) (*smtpclient.Client, error) {
	for {
		p.mu.Lock()
		if list := p.idle[key]; reuse && len(list) > 0 {
			ic := list[len(list)-1]
			p.idle[key] = list[:len(list)-1]
			delete(p.keyIP, ic)
			ic.timer.Stop()
			p.mu.Unlock()
			return ic.client, nil
		}
		if p.limit <= 0 || p.open[ip] < p.limit {
			p.open[ip]++
			p.mu.Unlock()
			return nil, nil
		}
		// At the limit: an idle connection to the same IP under another
		// key (another policy or host name) gives up its slot.
		var victim *idleConn
		for ic, vip := range p.keyIP {
			if vip == ip && (ic.key != key || !reuse) {
				victim = ic
				break
			}
		}
		if victim != nil {
			p.removeIdle(victim)
			p.mu.Unlock()
			victim.timer.Stop()
			victim.client.Quit()
			return nil, nil // the victim's slot is ours now
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *connPool) removeIdle(victim *idleConn) {
	list := p.idle[victim.key]
	for i, ic := range list {
		if ic == victim {
			p.idle[victim.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	delete(p.keyIP, victim)
}

// put returns a healthy connection for reuse; it is closed after the idle
// timeout if nobody takes it.
func (p *connPool) put(ip, key string, c *smtpclient.Client) {
	ic := &idleConn{key: key, client: c}
	p.mu.Lock()
	defer p.mu.Unlock()
	ic.timer = time.AfterFunc(p.idleTimeout, func() {
		p.mu.Lock()
		found := false
		for _, x := range p.idle[key] {
			found = found || x == ic
		}
		if found {
			p.removeIdle(ic)
		}
		p.mu.Unlock()
		if found {
			ic.client.Quit()
			p.done(ip)
		}
	})
	p.idle[key] = append(p.idle[key], ic)
	p.keyIP[ic] = ip
	p.signal()
}

// done releases the slot of a connection that was closed.
func (p *connPool) done(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open[ip]--; p.open[ip] <= 0 {
		delete(p.open, ip)
	}
	p.signal()
}

// close quits every idle connection.
func (p *connPool) close() {
	p.mu.Lock()
	var all []*idleConn
	for _, list := range p.idle {
		all = append(all, list...)
	}
	p.idle = map[string][]*idleConn{}
	p.keyIP = map[*idleConn]string{}
	p.mu.Unlock()
	for _, ic := range all {
		ic.timer.Stop()
		ic.client.Quit()
	}
}
