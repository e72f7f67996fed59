//go:build !linux

package daemon

import "net"

// peerOf is not implemented here: every unix socket peer is one caller
// of unknown uid, admitted only by a client that admits every caller.
func peerOf(net.Conn) (*peer, bool) { return nil, false }
