package uplink

import "encoding/json"

var jsonUnmarshal = json.Unmarshal
