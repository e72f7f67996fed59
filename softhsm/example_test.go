//go:build cgo

package softhsm_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"

	"github.com/mp-hsm/mp-hsm/softhsm"
)

func ExampleCA_IssueLeaf() {
	ca, err := softhsm.NewCA(softhsm.EnvTest)
	if err != nil {
		panic(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	leaf, err := ca.IssueLeaf(key.Public(), softhsm.LeafOptions{OrgName: "EKSEMPEL AS"})
	if err != nil {
		panic(err)
	}
	fmt.Println(leaf.Subject)
	fmt.Println(leaf.Issuer.CommonName)
	// Output:
	// SERIALNUMBER=910000004,CN=EKSEMPEL AS,O=EKSEMPEL AS,C=NO,2.5.4.97=#130f4e54524e4f2d393130303030303034
	// Buypass Class 3 Test4 CA G2 HT Business
}

func ExampleValidOrgNumber() {
	for seed := range 3 {
		fmt.Println(softhsm.ValidOrgNumber(seed))
	}
	// Output:
	// 910000004
	// 910000012
	// 910000020
}
