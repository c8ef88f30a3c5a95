-- Spam filter on the SMTP dissector (rules/smtp.lua): a mail whose content holds a banned
-- keyword (case-insensitive; headers and body, as sent) raises an alert and the
-- connection is reset before the mail's end reaches the server, so the server never
-- accepts it; the client sees the connection reset. Other mails pass intact.
-- (tests/lab_smtp.sh sends real mail through it.)
--
-- Configuration: the lists below.
local BANNED = { 'viagra', 'lottery winner', 'casino bonus' }
local PORTS = { 25 }

local smtp = require('smtp')
for _, port in ipairs(PORTS) do smtp.install_tcp_rule(port) end

local banned, longest = {}, 0
for i, word in ipairs(BANNED) do
  banned[i] = word:lower()
  if #word > longest then longest = #word end
end

-- the first banned keyword in `text` (lower case), or nil
local function find_banned(text)
  for _, word in ipairs(banned) do
    if text:find(word, 1, true) then return word end
  end
  return nil
end

haka.rule{
  name = 'smtp_spam',
  on = smtp.events.mail_content,
  options = { streamed = true },
  eval = function (flow, iter)
    -- the mail as it comes; the last bytes of each piece are kept with the next, so that
    -- a keyword split between two pieces (two TCP segments) is found too
    local tail = ''
    for sub in iter:foreach_available() do
      local text = tail .. sub:asstring():lower()
      local word = find_banned(text)
      if word then
        haka.alert{
          description = string.format("smtp_spam: banned keyword '%s' in a mail, connection reset", word),
          severity = 'medium',
          confidence = 'high',
        }
        flow:reset()
        return
      end
      tail = text:sub(-(longest - 1))
      if longest <= 1 then tail = '' end
    end
  end,
}
