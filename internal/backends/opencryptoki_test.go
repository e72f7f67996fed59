package backends

import "testing"

func TestOpenCryptokiStartStop(t *testing.T) {
	for i := 0; i < 2; i++ {
		r, err := StartOpenCryptoki(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", *r)
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}
