//go:build !linux

package hsm

// holdStderr runs f; only on Linux is standard error held back.
func holdStderr(f func()) string {
	f()
	return ""
}
