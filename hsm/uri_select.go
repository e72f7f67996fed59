package hsm

// Selectors returns the token and key selection the URI describes: token,
// serial, manufacturer, model and slot-id choose the token; id and object
// choose the key. A type other than private, public or cert (or none)
// cannot name a signing key and gives an error matching ErrInvalidURI.
func (u *URI) Selectors() (TokenSelector, KeySelector, error) {
	switch u.Type {
	case "", "private", "public", "cert":
	default:
		return TokenSelector{}, KeySelector{}, &URIError{URI: u.String(), Attr: "type",
			Reason: "type=" + u.Type + " cannot name a signing key; use type=private or leave type out"}
	}
	ts := TokenSelector{Label: u.Token, Serial: u.Serial, Manufacturer: u.Manufacturer, Model: u.Model}
	if u.SlotID != nil {
		id := *u.SlotID
		ts.SlotID = &id
	}
	return ts, KeySelector{ID: u.ID, Label: u.Object}, nil
}
