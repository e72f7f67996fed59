// Package crypto11interop holds tests only: they prove that mp-hsm works
// beside github.com/ThalesGroup/crypto11 in one process. A crypto11 key
// signs a Maskinporten grant through package signer and package grant, and
// crypto11 and package hsm share one PKCS#11 module (SoftHSM2) without
// either finalising it under the other. docs/crypto11.md tells users what
// the tests show.
//
// crypto11 is a test-only dependency of mp-hsm: only this package's test
// files import it.
//
// crypto11 v1.6.2 refuses a module that something else in the process has
// initialised (its C_Initialize must succeed), and package softhsm
// initialises SoftHSM2 in every test process. So each scenario runs in a
// child process (the test binary again, through internal/testexec) in
// which crypto11 is the first to load the module, as in a user's program;
// the parent makes the token and runs the emulator.
package crypto11interop
