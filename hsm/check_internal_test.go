//go:build cgo

package hsm

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/mp-hsm/mp-hsm/softhsm"
	"github.com/mp-hsm/mp-hsm/tokenerr"
)

// pulledCard is OpenSC with the card pulled: C_GetTokenInfo still answers
// from its cache, C_GetSlotInfo says no token is present.
type pulledCard struct {
	p11
	pulled bool
}

func (p *pulledCard) GetSlotInfo(slot uint) (pkcs11.SlotInfo, error) {
	si, err := p.p11.GetSlotInfo(slot)
	if p.pulled {
		si.Flags &^= pkcs11.CKF_TOKEN_PRESENT
	}
	return si, err
}

// TestCheckSeesWhatTokenInfoHides: Check reports a pulled card that
// C_GetTokenInfo does not show, a lost login, and a closed session, each
// as its transient kind.
func TestCheckSeesWhatTokenInfoHides(t *testing.T) {
	st := softhsm.New(t)
	m, err := Open(st.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	d := &pulledCard{p11: m.p}
	m.p = d
	tok, err := m.OpenSlot(Slot{ID: st.SlotID}, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(StaticPIN([]byte(st.PIN)), LoginOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := tok.Check(); err != nil {
		t.Fatalf("Check of a present, logged-in token = %v", err)
	}
	d.pulled = true
	if _, err := tok.Info(); err != nil {
		t.Fatalf("the double should leave C_GetTokenInfo answering: %v", err)
	}
	if err := tok.Check(); !errors.Is(err, tokenerr.ErrTokenRemoved) || !tokenerr.Transient(err) {
		t.Errorf("Check with the card pulled = %v, want tokenerr.ErrTokenRemoved", err)
	}
	d.pulled = false
	if err := m.lib.ctx.Logout(tok.loginSH); err != nil {
		t.Fatal(err)
	}
	if err := tok.Check(); !errors.Is(err, tokenerr.ErrNotLoggedIn) || !tokenerr.Transient(err) {
		t.Errorf("Check after the login was lost = %v, want tokenerr.ErrNotLoggedIn", err)
	}
	if err := d.p11.CloseSession(tok.loginSH); err != nil {
		t.Fatal(err)
	}
	if err := tok.Check(); !errors.Is(err, tokenerr.ErrSessionClosed) || !errors.Is(err, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)) {
		t.Errorf("Check after the session was closed = %v, want tokenerr.ErrSessionClosed (CKR_SESSION_HANDLE_INVALID)", err)
	}
}
