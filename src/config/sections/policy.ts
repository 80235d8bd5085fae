// Sender policy: which MAIL FROM and From: addresses an authenticated member may use, and who may claim a member's address.
// Pure declaration (see ../schema.ts).
import { defineSection } from '../schema.js';

export const policy = defineSection('policy', 'Sender ownership (Postfix reject_sender_login_mismatch)', {
  sender_check: { type: 'string', default: 'reject', oneOf: ['reject', 'allow'], doc: 'MAIL FROM not owned by the authenticated user: reject (553 5.7.1) or allow' },
  from_header_check: { type: 'string', default: 'reject', oneOf: ['reject', 'allow'], doc: 'From: header address not owned by the authenticated user: reject (553 5.7.1 after DATA) or allow' },
  login_is_address: { type: 'boolean', default: true, doc: 'A login of the form user@domain owns that address' },
  sender_map: { type: 'string', default: '', doc: 'File of "address login[,login...]" lines (Postfix smtpd_sender_login_maps); "@domain" matches a whole domain' },
  unauth_member_sender: { type: 'string', default: 'reject', oneOf: ['reject', 'allow'], doc: 'Unauthenticated MAIL FROM with a member address (owned in sender_map, or seen in a member\'s successful AUTH): reject (553 5.7.1) or allow' },
  null_sender: { type: 'boolean', default: true, doc: 'Accept the null sender <> (bounces) on inbound' },
});
