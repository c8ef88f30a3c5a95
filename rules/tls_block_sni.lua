-- Block TLS connections by server name: a ClientHello whose SNI is
-- blocked.example raises an alert and resets the connection (tests/lab_tls.sh).
require("protocol/tls")

haka.rule{
    on = haka.dissectors.tls.events.client_hello,
    eval = function (flow, hello)
        if hello.sni == "blocked.example" then
            haka.alert{ description = "blocked SNI " .. hello.sni }
            flow:reset()
        end
    end
}
