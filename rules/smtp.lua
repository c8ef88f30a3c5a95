-- SMTP dissector written in Lua: a grammar for the lines, a state machine for the dialogue,
-- haka.dissector.new for the events. The model is Haka's SMTP tutorial dissector (its
-- events and fields), written anew for this engine.
--
--   local smtp = require('smtp')        -- (the rules file's folder is on the module path)
--   smtp.install_tcp_rule(25)           -- a tcp_connection next_dissector policy; any port
--   haka.rule{ on = smtp.events.command, eval = function (flow, cmd) ... end }
--
-- Events (smtp.events = haka.dissectors.smtp.events):
--  * command(flow, cmd): a client command line. cmd.command: the verb as sent ('EHLO',
--    'mail': compare with :upper()), cmd.parameter: the rest of the line after the
--    blank(s), or nil when there is none.
--  * response(flow, resp): a server reply, all the lines of a multi-line one.
--    resp.responses[i].code ('250'), .sep ('-' on each line but the last, ' ' or '' on the
--    last), .parameter (the text, may be ''); resp.code: the first line's code.
--  * mail_content (streamed): the mail sent after DATA, as on the wire (headers and body,
--    CRLF line ends, dot-stuffing kept), without the final '.' line. A rule with
--    options.streamed = true reads it as a blocking iterator to the end of the mail; a rule
--    without gets each piece (a sub of whole lines: what the segments brought) as it
--    comes. Writes into it go into the TCP stream.
--  * protocol_error(flow, err): malformed input (see below).
--
-- Dialogue: greeting (220) -> commands and replies in any interleaving (pipelining) ->
-- DATA + 354 -> mail content until '.' -> commands ... -> QUIT + 221 (finish). AUTH's 334
-- challenges take one client line each (not a command). STARTTLS + 220: the rest is TLS,
-- not dissected (finish). BDAT (CHUNKING, RFC 3030): each chunk's bytes follow its
-- command and are mail content; the mail ends with the LAST chunk.
--
-- Bounds: a command or reply line longer than MAX_LINE bytes, a mail line longer than
-- MAX_DATA_LINE bytes, a line that is not SMTP (a lone CR, a bad reply code, a command
-- that is not a word) or a client speaking before the greeting is a parse error, hence
-- the dissector's protocol error: counted (lua_protocol_errors), the protocol_error
-- event, and the connection dropped ([rules] lua_protocol_error). A multi-line reply
-- is held until its last line, within [rules] streamed_hold_kb.
local tcp_connection = require('protocol/tcp_connection')

local module = {}

-- RFC 5321 4.5.3.1: 512 bytes per command or reply line, 1000 per text line (CRLF included).
-- Real mail goes past the text-line limit (long HTML lines): the mail lines get more room.
local MAX_LINE = 2048
local MAX_DATA_LINE = 65536

local SmtpDissector = haka.dissector.new{
  type = tcp_connection.helper.TcpFlowDissector,
  name = 'smtp',
}

SmtpDissector:register_event('command')
SmtpDissector:register_event('response')
SmtpDissector:register_streamed_event('mail_content')

---------------------------------------------------------------------------
-- grammar
---------------------------------------------------------------------------
SmtpDissector.grammar = haka.grammar.new('smtp', function ()
  local line_end = token('\r?\n')
  local text = string.format('[^\r\n]{0,%d}', MAX_LINE)

  -- VERB [SP parameter] CRLF
  command = record{
    field('command', token('[A-Za-z]{1,16}')),
    optional(
      record{ token('[ \t]+'), field('parameter', token(text)) },
      function (self, ctx)
        local la = ctx:lookahead()
        return la == 0x20 or la == 0x09
      end
    ),
    line_end,
  }

  -- CODE [- or SP] text CRLF, repeated while the separator is '-'
  reply_line = record{
    field('code', token('[2-5][0-9][0-9]')),
    field('sep', token('[- ]?')),
    field('parameter', token(text)),
    line_end,
  }
  reply = record{
    field('responses', array(reply_line):untilcond(function (elem, ctx)
      return elem ~= nil and elem.sep ~= '-'
    end)),
  }:extra{
    code = function (self) return self.responses[1].code end,
  }

  -- an AUTH exchange's client line (base64 or '*')
  auth_line = record{
    field('data', token(text)),
    line_end,
  }

  export(command, reply, auth_line)
end)

---------------------------------------------------------------------------
-- the mail content
---------------------------------------------------------------------------
-- It is taken as it comes, all the whole lines available at once (a parse per line would
-- cost a grammar parse, a result and an event per line): a state type of its own, whose
-- up update gives { data = sub of whole lines or nil, last = the '.' line was reached }.
local BidirectionalState = haka.state_machine.BidirectionalState

-- the bytes up to the last LF available from iter, waiting for one; nil: the stream ended
-- before a LF; false: more than `max` bytes without a LF
local function whole_lines(iter, max)
  local checked, hold = 0, nil
  local function done(r)
    if hold then hold:unmark() end
    return r
  end
  while true do
    local _, avail = iter:check_available(max + 2, true)
    if avail > checked then
      local it = iter:copy()
      it:advance(checked)
      local last = it:sub(avail - checked):asstring():match('.*()\n')
      if last then return done(checked + last) end
      checked = avail
    end
    if checked > max then return done(false) end
    -- (the stream keeps the partial line while we wait: the engine releases the stream
    -- data nothing marks at each segment)
    if not hold then hold = iter:copy(); hold:mark() end
    if not iter:check_available(checked + 1) then return done(nil) end
  end
end

local MailState = haka.state_machine.new_state_type{
  name = 'MailState',
  parent = BidirectionalState,
  update = function (self, instance, iter, direction)
    if direction ~= 'up' then
      return BidirectionalState.method._update(self, instance, iter, direction)
    end
    local owner = instance.owner
    local n = whole_lines(iter, MAX_DATA_LINE)
    if n == false then
      return owner:protocol_error(string.format("smtp: mail line longer than %d bytes", MAX_DATA_LINE))
    elseif n == nil then
      -- (the connection ended in the middle of a line: the mail is cut there)
      return instance:trigger('up', { data = iter:sub('available', true), last = true })
    end
    -- the '.' line: at the start (always a line start here) or after a LF
    local text = iter:copy():sub(n):asstring()
    local content, dot = n, nil
    if text:find('^%.\r?\n') then
      content, dot = 0, 1
    else
      dot = text:find('\n%.\r?\n')
      if dot then content, dot = dot, dot + 1 end
    end
    local data
    -- (split: the iterator must not stay in a chunk the mail stream takes away)
    if content > 0 then data = iter:sub(content, true) end
    instance:trigger('up', { data = data, last = dot ~= nil })
    -- (past the '.' line once the mail stream gave the content back to the TCP stream)
    if dot then iter:advance(text:sub(dot + 1, dot + 1) == '\r' and 3 or 2) end
    -- (and on a chunk of its own: the engine releases, at the next segment, the stream
    -- chunks no mark holds, the one the iterator would be left in included)
    iter:split()
  end,
}

-- after BDAT: the chunk's bytes as they come, { data = sub, last = the chunk is over }
local ChunkState = haka.state_machine.new_state_type{
  name = 'ChunkState',
  parent = BidirectionalState,
  update = function (self, instance, iter, direction)
    if direction ~= 'up' then
      return BidirectionalState.method._update(self, instance, iter, direction)
    end
    local bdat = instance.owner.bdat
    local _, avail = iter:check_available(bdat.left, true)
    local data = iter:sub(avail, true)
    bdat.left = bdat.left - avail
    return instance:trigger('up', { data = data, last = bdat.left == 0 })
  end,
}

-- a piece of the mail to the rules
local function mail_piece(self, data)
  local mail = self.mail
  local iter = mail:push(data)
  self:trigger('mail_content', mail, iter)
  mail:pop()
end

-- the end of the mail
local function mail_end(self)
  local mail = self.mail
  self.mail = nil
  if not self:can_continue() then return end
  mail:finish()
  self:trigger('mail_content', mail, nil)
  -- (the streamed rules' coroutines of this mail are over: forget them, so that a
  -- connection sending many mails does not keep one per mail)
  local cos = rawget(self, '_costream')
  if cos then cos[mail] = nil end
end

---------------------------------------------------------------------------
-- state machine
---------------------------------------------------------------------------
local g = SmtpDissector.grammar

SmtpDissector.state_machine = haka.state_machine.new('smtp', function ()
  state_type(BidirectionalState)

  greeting = state(nil, g.reply)          -- the server speaks first
  session = state(g.command, g.reply)     -- commands and replies, pipelined or not
  auth = state(g.auth_line, g.reply)      -- after a 334 challenge
  data = MailState:new(nil, g.reply)      -- after DATA and its 354: the mail content
  chunk = ChunkState:new(nil, g.reply)    -- after BDAT: the chunk

  -- the client before the greeting, or any direction a state has no grammar for
  any:on{
    event = events.missing_grammar,
    execute = function (self, direction)
      self:protocol_error(string.format("smtp: unexpected %s data in state %s",
        direction == 'up' and 'client' or 'server', self.state.current))
    end,
  }

  greeting:on{
    event = events.down,
    execute = function (self, resp) self:trigger('response', resp) end,
  }
  greeting:on{
    event = events.down,
    when = function (self, resp) return resp.code == '220' end,
    jump = session,
  }
  -- (a 554 greeting: the server refuses the session and closes)
  greeting:on{ event = events.down, jump = finish }

  session:on{
    event = events.up,
    execute = function (self, cmd)
      local verb = cmd.command:upper()
      self.last_command = verb
      if verb == 'BDAT' then
        local size, last = (cmd.parameter or ''):match('^(%d+)[ \t]*(%a*)[ \t]*$')
        size = tonumber(size)
        if not size or (last ~= '' and last:upper() ~= 'LAST') then
          self.last_command = nil
          return self:protocol_error("smtp: invalid BDAT parameter")
        end
        self.bdat = { left = size, last = last ~= '' }
        self.mail = self.mail or haka.vbuffer_sub_stream()
      end
      self:trigger('command', cmd)
    end,
  }
  session:on{
    event = events.up,
    when = function (self, cmd) return self.last_command == 'BDAT' and self.bdat.left > 0 end,
    jump = chunk,
  }
  session:on{
    event = events.up,
    when = function (self, cmd) return self.last_command == 'BDAT' and self.bdat.last end,
    execute = function (self) mail_end(self) end,
  }
  session:on{
    event = events.down,
    execute = function (self, resp) self:trigger('response', resp) end,
  }
  session:on{
    event = events.down,
    when = function (self, resp) return resp.code == '354' end,
    jump = data,
  }
  session:on{
    event = events.down,
    when = function (self, resp) return resp.code == '334' end,
    jump = auth,
  }
  session:on{
    event = events.down,
    when = function (self, resp)
      return resp.code == '221' or (resp.code == '220' and self.last_command == 'STARTTLS')
    end,
    jump = finish,
  }

  auth:on{ event = events.up, jump = session }
  auth:on{
    event = events.down,
    execute = function (self, resp) self:trigger('response', resp) end,
  }
  auth:on{
    event = events.down,
    when = function (self, resp) return resp.code ~= '334' end,
    jump = session,
  }

  data:on{
    event = events.enter,
    execute = function (self) self.mail = haka.vbuffer_sub_stream() end,
  }
  data:on{
    event = events.up,
    execute = function (self, content)
      if content.data then mail_piece(self, content.data) end
      if content.last then mail_end(self) end
    end,
  }
  data:on{
    event = events.up,
    when = function (self, content) return content.last end,
    jump = session,
  }
  data:on{
    event = events.down,
    execute = function (self, resp) self:trigger('response', resp) end,
  }
  -- (the connection ended in the middle of the mail: its streamed rules get the end)
  data:on{
    event = events.leave,
    execute = function (self) if self.mail then mail_end(self) end end,
  }

  chunk:on{
    event = events.up,
    execute = function (self, content)
      mail_piece(self, content.data)
      if content.last and self.bdat.last then mail_end(self) end
    end,
  }
  chunk:on{
    event = events.up,
    when = function (self, content) return content.last end,
    jump = session,
  }
  chunk:on{
    event = events.down,
    execute = function (self, resp) self:trigger('response', resp) end,
  }

  initial(greeting)
end)

---------------------------------------------------------------------------
-- module
---------------------------------------------------------------------------
module.events = SmtpDissector.events
module.dissector = SmtpDissector

-- install_tcp_rule(port): dissect the TCP connections to `port` as SMTP
function module.install_tcp_rule(port)
  SmtpDissector:install_tcp_rule(port)
end

-- dissect(flow): dissect this connection as SMTP (from a tcp_connection rule)
function module.dissect(flow)
  SmtpDissector:dissect(flow)
end

return module
