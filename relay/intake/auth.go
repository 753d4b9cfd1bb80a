package intake

import (
	"errors"

	"golang.org/x/crypto/bcrypt"
)

// Users checks SMTP AUTH credentials against bcrypt hashes. It is read-only
// after construction and safe for concurrent use.
type Users struct {
	hashes map[string][]byte
	dummy  []byte // compared when the user is unknown, so timing does not reveal names
}

// NewUsers returns a user database from name → bcrypt hash.
func NewUsers(hashes map[string]string) (*Users, error) {
	u := &Users{hashes: make(map[string][]byte, len(hashes))}
	cost := bcrypt.DefaultCost
	for name, h := range hashes {
		c, err := bcrypt.Cost([]byte(h))
		if err != nil {
			return nil, errors.New("password hash of user " + name + " is not a bcrypt hash")
		}
		cost = c
		u.hashes[name] = []byte(h)
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("no such user"), cost)
	if err != nil {
		return nil, err
	}
	u.dummy = dummy
	return u, nil
}

// Check reports whether password is right for user.
func (u *Users) Check(user, password string) bool {
	if u == nil {
		return false
	}
	h, ok := u.hashes[user]
	if !ok {
		bcrypt.CompareHashAndPassword(u.dummy, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(h, []byte(password)) == nil
}

// loginServer is the server side of the obsolete but widely used LOGIN
// SASL mechanism (draft-murchison-sasl-login): it asks for the user name
// and the password in two base64 challenges. A client may send the user
// name as its initial response.
type loginServer struct {
	check    func(identity, username, password string) error
	username string
	step     int
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check("", l.username, string(response))
	}
	return nil, false, errors.New("unexpected LOGIN response")
}
