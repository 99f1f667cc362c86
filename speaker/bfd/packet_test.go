package bfd

import (
	"errors"
	"testing"
	"time"
)

func validPacket() Packet {
	return Packet{
		Version: 1, Diag: DiagNeighborSignaledDown, State: Up, Poll: true, CPI: true, Demand: true,
		DetectMult: 3, Length: packetLen, MyDiscr: 0x01020304, YourDiscr: 0xa0b0c0d0,
		DesiredMinTx: 300 * time.Millisecond, RequiredMinRx: 250 * time.Millisecond,
	}
}

func TestPacket_RoundTripKeepsEveryField(t *testing.T) {
	for _, p := range []Packet{
		validPacket(),
		{Version: 1, State: Down, Final: true, DetectMult: 1, Length: packetLen, MyDiscr: 1, DesiredMinTx: time.Second, RequiredMinRx: time.Microsecond},
		{Version: 1, State: AdminDown, Diag: DiagAdministrativelyDown, DetectMult: 255, Length: packetLen, MyDiscr: ^uint32(0), YourDiscr: 7, RequiredMinEchoRx: 50 * time.Millisecond},
	} {
		b := p.Marshal()
		if len(b) != packetLen {
			t.Fatalf("Marshal: %d bytes, want %d", len(b), packetLen)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(%+v)): %v", p, err)
		}
		if got != p {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, p)
		}
	}
}

func TestPacket_WireLayoutMatchesRFC5880(t *testing.T) {
	b := validPacket().Marshal()
	want := []byte{
		0x20 | 3,                  // version 1, diag 3
		0xc0 | 0x20 | 0x08 | 0x02, // Up, P, C, D
		3, 24,
		1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0,
		0, 0x04, 0x93, 0xe0, // 300,000 µs
		0, 0x03, 0xd0, 0x90, // 250,000 µs
		0, 0, 0, 0,
	}
	if string(b) != string(want) {
		t.Errorf("Marshal:\n got % x\nwant % x", b, want)
	}
}

func TestParse_DropsInvalidPacketsWithTheirReason(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
		want Reason
	}{
		{"short", func(b []byte) []byte { return b[:23] }, ReasonShort},
		{"version 0", func(b []byte) []byte { b[0] = b[0]&0x1f | 0<<5; return b }, ReasonVersion},
		{"version 2", func(b []byte) []byte { b[0] = b[0]&0x1f | 2<<5; return b }, ReasonVersion},
		{"length below 24", func(b []byte) []byte { b[3] = 23; return b }, ReasonLength},
		{"length beyond datagram", func(b []byte) []byte { b[3] = 26; return b }, ReasonLength},
		{"detect mult 0", func(b []byte) []byte { b[2] = 0; return b }, ReasonDetectMult},
		{"multipoint", func(b []byte) []byte { b[1] |= flagMultipoint; return b }, ReasonMultipoint},
		{"my discr 0", func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }, ReasonMyDiscr},
		{"your discr 0 in Up", func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }, ReasonYourDiscr},
		{"your discr 0 in Init", func(b []byte) []byte {
			copy(b[8:12], []byte{0, 0, 0, 0})
			b[1] = b[1]&0x3f | uint8(Init)<<6
			return b
		}, ReasonYourDiscr},
		{"auth bit", func(b []byte) []byte { b[1] |= flagAuth; return append(b, 1, 2, 3, 4) }, ReasonAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.edit(validPacket().Marshal()))
			var de *DropError
			if !errors.As(err, &de) {
				t.Fatalf("Parse: err %v, want a *DropError", err)
			}
			if de.Reason != tc.want {
				t.Errorf("reason %q, want %q (%v)", de.Reason, tc.want, err)
			}
		})
	}
}

func TestParse_AcceptsYourDiscrZeroInDownAndAdminDownAndLongerDatagrams(t *testing.T) {
	for _, s := range []State{Down, AdminDown} {
		p := validPacket()
		p.State, p.YourDiscr = s, 0
		if _, err := Parse(p.Marshal()); err != nil {
			t.Errorf("state %s, your discr 0: %v", s, err)
		}
	}
	if _, err := Parse(append(validPacket().Marshal(), 0, 0)); err != nil {
		t.Errorf("datagram longer than the length field: %v", err)
	}
}

// FuzzParse: any bytes either parse into a packet that marshals back to the
// same first 24 bytes (a longer Length, which RFC 5880 allows, is written
// back as 24: nothing past it is carried), or are
// dropped with a DropError; nothing panics. `go test -fuzz FuzzParse`
// explores further; the seeds run with every test.
func FuzzParse(f *testing.F) {
	f.Add(validPacket().Marshal())
	f.Add([]byte{})
	f.Add(make([]byte, 24))
	f.Add(append(validPacket().Marshal(), 0xff, 0xff))
	short := validPacket().Marshal()
	f.Add(short[:23])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			var drop *DropError
			if !errors.As(err, &drop) {
				t.Fatalf("Parse(% x): %v is no DropError", b, err)
			}
			return
		}
		want := append([]byte(nil), b[:packetLen]...)
		want[3] = packetLen
		if got := p.Marshal(); string(got) != string(want) {
			t.Fatalf("Parse(% x) = %+v, which marshals to % x", b, p, got)
		}
	})
}
