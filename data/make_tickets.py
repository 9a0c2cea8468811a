"""Generate the synthetic Lumen Cloud support-ticket dataset.

Lumen Cloud is a fictional file sync & storage company (plans Free / Plus /
Pro / Business; desktop, mobile and web apps, shared links, an admin console
and an API). This script writes a 12-label ticket classification dataset:

    data/tickets/train.jsonl       1,200 tickets (100 per label)
    data/tickets/validation.jsonl    240 tickets  (20 per label)
    data/tickets/test.jsonl          360 tickets  (30 per label)

Each line is ``{"text": "...", "label": "..."}``.

How it works
------------
1. For every label there is a hand-written list of sentence *templates*
   (``TEMPLATES``). Templates contain slots such as ``{plan}``, ``{device}``,
   ``{amount}``, ``{file}`` or ``{code}`` (an error code like ``LC-4012``).
2. The templates of each label are shuffled with a seeded RNG and each one is
   assigned to exactly ONE split (about 65 % train, 15 % validation, 20 %
   test). A model therefore never sees a test template during training and
   has to generalise to new wording.
3. Slots are filled from word lists (``SLOTS``). Some slot values are held out
   and are only used in the test split (e.g. certain devices, file names,
   browsers, feature names), so test tickets also contain unseen nouns.
4. Label-neutral "noise" is added: greetings, sign-offs, neutral context
   sentences ("I'm on the Pro plan."), lowercasing, dropped punctuation and
   small typos. This mimics real tickets and keeps texts unique.
5. Tickets are deduplicated globally (case- and whitespace-insensitive), so
   no text appears twice in one split or in two different splits.

Neighbouring labels deliberately share vocabulary (billing / refund /
cancel / plan_upgrade all talk about money and plans; login / password_reset /
security_report all talk about accounts and passwords; sync_issue and
bug_report both mention errors; sharing_permissions and data_export both
mention files, folders and links), but every template was written so that a
careful human reader can tell the intended label.

Everything is driven by ``random.Random(2026)``; running

    python3 data/make_tickets.py

rewrites the three files byte-for-byte identically. Only the Python standard
library is used.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

SEED = 2026
SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 1200, "validation": 240, "test": 360}
TEMPLATE_SHARE = {"train": 0.65, "validation": 0.15, "test": 0.20}
# Probability that a slot with held-out values draws a test-only value
# when generating the test split.
TEST_ONLY_PROB = 0.5

OUT_DIR = Path(__file__).resolve().parent / "tickets"

LABELS = (
    "billing",
    "refund",
    "cancel",
    "login",
    "password_reset",
    "bug_report",
    "feature_request",
    "data_export",
    "sharing_permissions",
    "sync_issue",
    "security_report",
    "plan_upgrade",
)

# ---------------------------------------------------------------------------
# Slot values: name -> (values usable in every split, values used only in test)
# ---------------------------------------------------------------------------
SLOTS: dict[str, tuple[list[str], list[str]]] = {
    "plan": (["Free", "Plus", "Pro", "Business"], []),
    "paid_plan": (["Plus", "Pro", "Business"], []),
    "device": (
        ["iPhone", "Android phone", "MacBook Air", "Windows laptop", "iPad",
         "work PC", "Mac mini", "iMac", "Samsung phone", "Dell desktop"],
        ["Pixel 8", "Surface laptop", "Chromebook", "Galaxy Tab", "ThinkPad"],
    ),
    "app": (
        ["desktop app", "mobile app", "web app", "iOS app", "Android app",
         "Windows client", "Mac app"],
        ["browser version", "tablet app", "Linux beta client"],
    ),
    "os": (
        ["Windows 11", "macOS 14", "Ubuntu 22.04", "iOS 17", "Android 14"],
        ["Windows 10", "macOS Ventura", "Fedora 39", "iPadOS 17"],
    ),
    "browser": (["Chrome", "Firefox", "Safari"], ["Edge", "Brave", "Opera"]),
    "file": (
        ["Q3_report.xlsx", "wedding_photos.zip", "thesis_final_v2.docx",
         "budget 2024.xlsx", "IMG_4471.HEIC", "contract_signed.pdf",
         "podcast_ep12.mp3", "notes.txt", "logo.psd", "pitch-deck.pptx",
         "tax_return_2023.pdf", "drone_clip.mp4"],
        ["invoice_scan.pdf", "roadmap.key", "site_backup.tar.gz",
         "family_video.mov", "design-system.fig", "lease_agreement.docx"],
    ),
    "folder": (
        ["Client Projects", "Family Photos", "Team Shared", "Invoices 2024",
         "Marketing", "Uni Notes", "Design Assets", "Contracts", "Recordings"],
        ["Legal Hold", "Board Meetings", "Recipes", "Onboarding Docs", "Press Kit"],
    ),
    "amount": (
        ["$9.99", "$19.99", "$119.88", "$239.88", "$45.00", "$15.00",
         "$180.00", "€11.99", "£8.99", "$29.97", "$75.00", "€143.88"],
        ["$59.97", "€23.98", "$360.00", "£95.88", "$12.50"],
    ),
    "size": (
        ["2 GB", "50 GB", "200 GB", "1 TB", "15 GB", "500 MB", "80 GB",
         "3 TB"],
        ["700 GB", "40 GB", "1.5 TB"],
    ),
    "name": (
        ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Olga", "Ben",
         "Chloe", "Sam", "Noah", "Elena"],
        ["Fatima", "Diego", "Ines", "Tariq", "Hanna"],
    ),
    "company": (
        ["Acme Design", "Northwind Legal", "Brightside Dental", "Kite Labs",
         "Hollow Oak Studio", "Greenfield School", "Bluebird Media"],
        ["Pine & Partners", "Velo Logistics", "Marrow Architects"],
    ),
    "time": (
        ["since this morning", "since yesterday", "for two days", "since the last update",
         "all week", "since Monday", "for hours"],
        ["since the weekend", "for about an hour", "since Friday night"],
    ),
    "provider": (["Google Drive", "Dropbox", "OneDrive", "Box"],
                 ["iCloud Drive", "pCloud", "MEGA"]),
    "sso": (["Okta", "Azure AD", "Google Workspace"], ["OneLogin", "JumpCloud"]),
    "city": (
        ["Lagos", "Sao Paulo", "Moscow", "Jakarta", "Kyiv", "Manila", "Hanoi"],
        ["Bucharest", "Lima", "Nairobi"],
    ),
    "feature": (
        ["dark mode", "a native Linux client", "tags for files",
         "a bulk rename tool", "folder colors", "offline mode for the web app",
         "keyboard shortcuts in the web app", "version history longer than 30 days",
         "a shared team trash", "comments on files", "file locking",
         "a photo timeline view", "two-step approval for deletions",
         "custom branding on shared links"],
        ["end-to-end encrypted vaults", "smart albums for photos",
         "a menu bar widget", "file request forms", "a Zapier integration",
         "Markdown preview"],
    ),
    "wish": (
        ["pin favourite folders to the top", "choose the default link permission",
         "schedule automatic backups of a folder", "set a different sync folder per device",
         "undo a move operation", "see storage usage per folder",
         "merge two accounts", "preview RAW photos", "star files from the mobile app",
         "download a shared folder as a zip from the mobile app",
         "get a weekly email summary of changes", "restrict uploads to certain file types"],
        ["mute notifications for one shared folder", "set a custom icon for folders",
         "search inside PDFs", "archive old projects to cheaper storage"],
    ),
    "url": (
        ["lumen-cloud-login.net", "lumencloud-secure.com", "login-lumencloud.info"],
        ["lumen-verify-account.co", "lumencloud.support-help.org"],
    ),
    "greeting": (
        ["Hi,", "Hello,", "Hi there,", "hey", "Hello team,", "Good morning,",
         "Dear Lumen Cloud support,", "Hi support,", "Hey folks,", "Good afternoon,",
         "To whom it may concern,"],
        [],
    ),
    "signoff": (
        ["Thanks", "thx", "Thank you!", "Cheers", "Regards, {name}", "- {name}",
         "Thanks in advance.", "Best, {name}", "Kind regards", "ty",
         "Appreciate the help."],
        [],
    ),
    "filler": (
        ["I'm on the {plan} plan.", "My account email is {email}.",
         "I've been a customer since {year}.", "This is pretty urgent for me.",
         "I mostly use the {app}.", "Please get back to me soon.",
         "Sorry if this was asked before.", "My username is {email}.",
         "We are a small team of {n_small} people.", "I use Lumen on my {device}.",
         "Not sure if this is the right place to ask.",
         "Our account is under {company}."],
        [],
    ),
    "rant": (
        ["This is ridiculous.", "Seriously??", "Please fix this asap!!",
         "Really frustrated right now.", "Not happy.", "Come on.",
         "I expected better from a paid service."],
        [],
    ),
}

EMAIL_DOMAINS = (["gmail.com", "outlook.com", "proton.me", "yahoo.com"],
                 ["hey.com", "icloud.com"])
MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]

PLAN_ORDER = ["Free", "Plus", "Pro", "Business"]

# ---------------------------------------------------------------------------
# Templates. Each label has 50 templates; each template ends up in one split.
# ---------------------------------------------------------------------------
TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "Why was I charged {amount} on {date}? I thought my {paid_plan} plan was cheaper than that.",
        "I need an invoice for my last payment with our company name {company} on it.",
        "how do i update the credit card on my account, the old one expired",
        "My card payment keeps failing with error {code} even though the card works everywhere else.",
        "Can you add our VAT number to the invoices? Our finance team needs it on every charge.",
        "Where can I download receipts for the past year? I need them for my taxes.",
        "I see two different charges from Lumen Cloud on my statement this month, {amount} and a smaller one. What is each one for?",
        "The price on my invoice doesn't match the price listed on your website for {paid_plan}.",
        "Is sales tax included in the {amount} I pay every month or is it added on top?",
        "We'd like to pay by bank transfer against an invoice instead of by card for our Business account. Is that possible?",
        "Invoices still go to a colleague who left. Please change the billing email to {email}.",
        "Why does my account say the next payment is on {date}? I signed up in a different month.",
        "got an email saying my payment was declined for {paid_plan}. what do i need to do so nothing gets interrupted",
        "Can I pay with PayPal instead of a credit card?",
        "Our accountant is asking which legal entity issues the Lumen Cloud invoices, the EU or the US one.",
        "There's a charge called LUMEN*CLOUD for {amount} on my card. I do have an account, I just want to know which subscription it belongs to.",
        "I'm being billed in euros but I live in the US. Can the billing currency on my account be changed?",
        "Please explain the prorated line of {amount} on my latest invoice. We only added one seat and the number looks high to me.",
        "Who on our team receives the billing emails? I'm the workspace admin and I never get them.",
        "Does the annual {paid_plan} plan renew at the same price next year, or will it go up?",
        "Our company requires a purchase order number on every invoice. Where can I enter it in the billing settings?",
        "Hello, the payment method on file is my old employer's card. I'd like to put my personal card on the account instead.",
        "Why is my bill {amount} this month? It's normally lower and I didn't change anything.",
        "I'm on {paid_plan} and got charged {amount}, but the pricing page shows a different number. I don't want to change anything, I just want to understand the difference. Could someone walk me through it?",
        "Can future invoices be addressed to {company} instead of my personal name?",
        "Is there a way to get an email reminder a few days before my card is charged for the renewal?",
        "Do you accept American Express for Business accounts?",
        "Which day of the month will my card be billed now that I switched to annual billing?",
        "The {app} says my last payment failed, but my bank says there was no attempt at all. What's going on with my billing?",
        "Where can our team account see the full billing history, including the charges for extra seats?",
        "Getting 'card verification failed ({code})' when I try to save a new card in the billing page.",
        "Where is the invoice for {date}? The billing page only lists older invoices.",
        "Could you send me the receipt for the {amount} payment from {date}? The email never arrived.",
        "My student discount is no longer on the last invoice and the price went up to {amount}. Why?",
        "Hi, our finance department wants to know if a single invoice can be split between two cost centers. We pay for {paid_plan} for the whole office and they need to allocate the cost.",
        "Can I get a copy of all my invoices from {year}?",
        "My payment didn't go through and now there's a banner saying my account is past due. How do I pay the outstanding balance?",
        "How do I change the billing address that appears on my invoices?",
        "what card is on file for my account? i can't see it in the billing section",
        "Your invoice lists {n_small} seats, but the total doesn't add up. Can you check the calculation?",
        "I'd like our invoices to go to our accounts payable address as well as to me.",
        "Is the {amount} charge a one-time fee or will it repeat every month?",
        "We got a payment failure email for our Business workspace, but the card is valid. Can you retry the charge?",
        "Billing question: are the prices for {paid_plan} shown with or without VAT?",
        "Why does the invoice from {date} show a different billing address than the one in my settings?",
        "Quick billing question: on which day does Lumen Cloud charge my card each month?",
        "My invoice shows {company} but the address is missing. Can you add it to all future invoices?",
        "The payment for {paid_plan} failed twice this week. Which payment methods do you accept besides cards?",
        "Can I see what I'll be billed at the next renewal before it happens?",
        "I got an invoice for {amount} but no breakdown of what it covers. Can you send an itemised version?",
    ],
    "refund": [
        "I want a refund for the {amount} you charged on {date}.",
        "I was charged twice this month, please refund one of the payments.",
        "I cancelled on {date} but you still took {amount}. I want my money back.",
        "My annual {paid_plan} plan renewed automatically and I didn't want it. Can I get a refund for the months I won't use?",
        "i upgraded by mistake, can you reverse the charge and refund it",
        "Please refund my last payment, the service was down for most of the week.",
        "The free trial turned into a paid plan and charged {amount}. I never meant to keep it, so I'd like that money returned.",
        "Requesting a refund of {amount}. The charge hit our old company card after we had already stopped using Lumen Cloud.",
        "How long does a refund take to appear on my card? Support said it was approved on {date}.",
        "Any update on my refund? I opened a ticket last week and still no money back.",
        "My kid bought {paid_plan} on my {device} without asking. Please refund it.",
        "We removed {n_small} seats in the middle of the cycle and I'd like a partial refund for them.",
        "You charged me {amount} for {paid_plan} but my account still only has Free features. Refund please.",
        "Do you give refunds within 30 days? I bought {paid_plan} yesterday and it isn't what I need.",
        "We were charged for {n_small} seats but only two people use the account. Please credit the difference back to our card.",
        "I deleted my account and was billed {amount} afterwards anyway. I want that returned to my card.",
        "The refund of {amount} you promised on {date} still hasn't shown up on my card.",
        "Can my refund be sent to PayPal? The card I paid with has been closed.",
        "Please reverse the duplicate {amount} transaction from {date}.",
        "I want my money back. Sync has been broken for two weeks and nobody from support has fixed it.",
        "Before I open a chargeback with my bank I'm asking one last time: refund the {amount} charge.",
        "I paid for the yearly plan by accident instead of monthly. Could you refund the annual payment? I'll then pay monthly.",
        "Is it possible to get a prorated refund for the rest of the year if I go down from {paid_plan} today?",
        "refund pls, the wrong card was used and it was not mine",
        "Our nonprofit discount wasn't applied, so we overpaid by {amount}. Could you refund the overcharge?",
        "Hello, I moved back to Free on {date} but I was still billed {amount} on the next cycle. Kindly send that money back.",
        "Why was my refund request rejected? The charge was obviously an error on your side.",
        "The price went up without any notice and I was charged {amount}. I want the difference refunded.",
        "I paid for the same plan twice, once in the {app} and once on the website. One of them needs to be refunded.",
        "Please refund the last two monthly payments. I haven't used the account since {date}.",
        "I was in hospital when my subscription renewed and couldn't cancel in time. I'd like to be reimbursed for that renewal.",
        "I bought an extra {size} storage add-on by accident this morning. Can I have my money back for it?",
        "The app charged me {amount} through the App Store. How do I get that refunded?",
        "After the outage on {date} I was offered a credit on my account. I would rather have it as a refund to my card, is that possible?",
        "You billed me {amount} even though my trial was supposed to last until {date}. I expect a full refund. I already have a screenshot of the trial end date from the signup page, and I haven't used any paid features.",
        "Please refund {amount}. I was charged after my plan had already been cancelled.",
        "I'd like a refund for the unused part of my {paid_plan} subscription.",
        "refund request for payment {code}, charged by mistake",
        "I want to request a refund for the renewal on {date}. I forgot to turn off auto-renew.",
        "Please give me my money back for this month, I haven't logged in once.",
        "Your system charged my card {amount} three times. I need two of those charges refunded.",
        "Hi, can I get a refund for the {size} storage add-on? I don't need it after all.",
        "How do I ask for a refund? I can't find a form anywhere.",
        "Where is my refund? It's been 10 business days since you confirmed it.",
        "I was told I'd be refunded {amount} for the billing error, but I only got half of it back.",
        "Please process a refund to my original payment method for the {amount} charge.",
        "I'm entitled to a refund under your 14-day policy, I signed up on {date}.",
        "Can you refund me for the days the service was unavailable?",
        "refund the extra seats please, we never used them",
        "I cancelled within the trial period but still got charged {amount}. Refund, please.",
    ],
    "cancel": [
        "How do I cancel my {paid_plan} subscription?",
        "Please cancel my account effective immediately.",
        "I want to stop my subscription before it renews on {date}.",
        "cancel my plan. i dont use it anymore",
        "We're moving our team to {provider}. Please close our Business account at the end of the current billing period.",
        "Where is the cancel button? I've looked everywhere in the settings.",
        "Turn off auto-renewal for my {paid_plan} plan, I don't want to be charged again.",
        "I'd like to delete my Lumen Cloud account completely, files and all.",
        "If I cancel today, will I keep access until {date}?",
        "Please cancel the subscription I started on my {device}, I don't want it.",
        "Please end my membership. It's too expensive for how little I use it.",
        "Stop billing me. I want out of this subscription.",
        "What happens to my files when I cancel my {paid_plan} plan?",
        "I'm closing my business, so please terminate the Lumen Cloud contract for {company}.",
        "I'd like to unsubscribe from the paid plan and go back to Free.",
        "Cancel the Lumen Cloud subscription for {email} and send me a confirmation please.",
        "Hi, my father passed away last month and I need to close his Lumen Cloud account. What do you need from me?",
        "How can I cancel through the App Store? The option isn't in the {app}.",
        "I tried to cancel in the settings but got error {code}, and now I'm worried I'll be charged again on {date}.",
        "Please don't renew my plan next month. Consider this my cancellation notice.",
        "Can you cancel my trial so it doesn't turn into a paid plan?",
        "I'm switching to {provider}, so shut down my account once I've had a week to move my stuff.",
        "End my subscription right now, not at the end of the cycle.",
        "Is there a cancellation fee if we leave the annual Business contract early?",
        "I want to cancel. Please don't offer me a discount, just cancel it.",
        "Please deactivate my account and remove my card details from your system.",
        "Our school won't be renewing, so please cancel the education plan for {company}.",
        "How do I make sure my subscription is actually cancelled and not just paused?",
        "I want to quit Lumen Cloud. What are the steps?",
        "cancel auto renew on account {email} thanks",
        "I requested cancellation on {date} but my account still shows {paid_plan} as active.",
        "please close the second account I created by accident, keep my main one",
        "I'm cancelling because of the price increase. Please confirm my plan will end on {date}.",
        "Can I cancel one month into the annual {paid_plan} plan, or am I locked in for the year?",
        "I've decided to stop using Lumen Cloud. I already copied everything I need to an external drive, so you can go ahead and close the account and stop the {paid_plan} subscription. Please confirm by email when it's done.",
        "How do I cancel? I don't want to renew.",
        "Please cancel my subscription and confirm it in writing.",
        "I want to cancel the {paid_plan} plan for {company}, our contract ends on {date}.",
        "Can you stop my plan from renewing? I'll be travelling and won't need it.",
        "i need to cancel my lumen cloud membership asap",
        "Does cancelling delete my files right away, or do I have some time?",
        "How do I cancel a subscription that I bought through Google Play?",
        "I'm done with Lumen Cloud. Please cancel everything on my account.",
        "Is it possible to cancel my paid plan but keep the account on Free?",
        "Cancellation request: account {email}, plan {paid_plan}, reason: not needed anymore.",
        "How do I cancel the Business subscription for our whole team?",
        "I'd like to cancel my Lumen Cloud plan at the end of this month.",
        "Please stop my subscription. I'll keep using the free version.",
        "what is the cancellation process for an annual {paid_plan} subscription?",
        "Cancel my account please, I'm moving all my stuff to {provider}.",
    ],
    "login": [
        "cant log in again!!",
        "I can't sign in to the {app}, it says error {code}.",
        "The login page just reloads after I type my email and password in {browser}.",
        "My two-factor codes get rejected every time, even though my authenticator app shows them correctly.",
        "I'm stuck in a login loop on my {device}: I sign in and it throws me back to the sign-in screen.",
        "SSO with {sso} has been failing for our whole team {time}. Nobody can sign into Lumen Cloud.",
        "It says my account is locked after too many attempts. How long until I can log in again?",
        "I know my password is right because it's in my password manager, but the login says 'invalid credentials'.",
        "The SMS verification code never arrives when I try to log in.",
        "I signed out of the {app} and now it won't let me back in.",
        "I got a new phone and my old authenticator app is gone, so I can't get past the 2FA step to sign in.",
        "The 'Sign in with Google' button does nothing in {browser}.",
        "The desktop app keeps logging me out every few minutes.",
        "How do I log in with my work email? It keeps redirecting me to my personal account.",
        "Login fails with 'session expired' right after I enter the code.",
        "hi, the magic link for signing in takes 20 minutes to arrive and by then it has expired",
        "After updating to version {version} the {app} asks me to sign in every single time I open it.",
        "The captcha on the sign-in page never loads, so I can't log in at all.",
        "Our new hire can't log in, she gets 'user not provisioned' from {sso}.",
        "I changed my account email last week and now I can't log in with the old one or the new one.",
        "Logging in works in the browser but not in the {app} on my {device}.",
        "My backup codes for two-step verification don't work and I can't access my account.",
        "Every time I try to sign in it says 'too many requests, try again later'. I've only tried twice!",
        "I haven't been able to get into my account since {date}. There's no error, the spinner just turns forever after I press Sign in.",
        "The app says 'account not found' but I've been paying for {paid_plan} for years.",
        "Signing in from our office network fails, but the same account works fine on mobile data.",
        "Is there an outage? Nobody in our office can log into Lumen Cloud right now.",
        "I'm locked out because my security key isn't recognized in {browser} anymore.",
        "Face ID sign-in stopped working in the iOS app and the fallback screen won't take my login either.",
        "keep getting error {code} on the login screen, please help asap, I have a client meeting in an hour",
        "Sign in with Apple created a new empty account instead of logging me into my existing one.",
        "I'm trying to log in on a new computer and the device approval email never comes.",
        "It says 'your organization requires SSO' but our admin says SSO isn't turned on for my user.",
        "The {app} won't accept my login since I turned on 2FA yesterday.",
        "I can sign in for a second but then I'm bounced back to the login page, over and over. I've cleared cookies, tried {browser} and a private window, and it's the same everywhere. My colleagues on the same {paid_plan} workspace can log in without problems.",
        "I can't log in to my account.",
        "Why can't I sign in? It just says something went wrong.",
        "Unable to log in on the {app} since the update to {version}.",
        "login not working on {browser}, works on my phone though",
        "I enter my email and password and nothing happens, I can't get into Lumen Cloud.",
        "The sign-in page shows error {code} for me and for my colleague.",
        "I can't log into the admin console, only into the normal web app.",
        "The 2FA code is always 'invalid' when I sign in on my {device}.",
        "My account says 'temporarily locked'. I need to log in today, can you unlock it?",
        "Help, I'm locked out of my Lumen account and can't sign in anywhere.",
        "Cannot sign in since {date}, error {code} every time.",
        "I'm not able to log in on the {app}, it keeps saying 'something went wrong, try again'.",
        "How do I sign in if the phone I use for 2FA is broken?",
        "my login stopped working after I changed phones",
        "The sign-in button spins and never lets me into my account on {browser}.",
    ],
    "password_reset": [
        "I forgot my password, how do I reset it?",
        "The password reset email never arrives. I already checked spam.",
        "The reset link says it has expired even though I clicked it right away.",
        "How do I change my password? I'd like to pick a new one.",
        "forgot pw. reset link pls",
        "When I choose a new password it says 'password does not meet requirements' but doesn't tell me which ones.",
        "I reset my password on the website. Do I also need to type the new one on my {device}?",
        "Can an admin reset a team member's password on the Business plan?",
        "The reset email goes to an address I can't access anymore. How can I reset my password?",
        "I've tried resetting my password four times and the link always gives error {code}.",
        "I don't remember my password and there's no 'Forgot password' link in the {app}.",
        "How often should I change my password? Our IT policy says every 90 days.",
        "My password manager saved the wrong password, so I need to set a new one.",
        "The SMS code for resetting my password isn't coming through.",
        "I want to change my password, but I always sign in with Google. Do I even have a password?",
        "Please send a password reset link to {email}.",
        "my new password won't save, the button stays grey",
        "The reset password page says 'token invalid' in {browser}.",
        "My wife set up our family account and neither of us remembers the password. How do we reset it?",
        "If I reset my password, will my devices stay linked or do I have to sign in everywhere again?",
        "I need to reset the password of our admin account, but the admin has left the company.",
        "How do I switch to a stronger password? My current one is too short.",
        "The reset email arrives but the button inside it doesn't do anything.",
        "Can I reuse an old password when I reset it? The form keeps refusing it.",
        "Hi there, I honestly can't recall my password. What are the steps to get a new one?",
        "The password reset link opens a blank page.",
        "Is it possible to reset my password from the mobile app?",
        "I was told to change my password at the next sign-in, but the form throws an error when I submit it.",
        "My password showed up in a list of leaked passwords on another site, so I want to change it now. Where do I do that?",
        "I type the new password twice and it says they don't match. They do match!",
        "The password reset form is asking for a recovery key that I never saved.",
        "I need to reset my Lumen password before tomorrow, but every reset email I request comes through empty.",
        "I changed my password this morning and I think I mistyped it, so I need to reset it again.",
        "Where is the option to change my account password? I can't find it in the {app} settings.",
        "The password reset keeps sending me back to the 'enter your email' step. I enter {email}, it says a link was sent, I click the link in the email and I land on the same first page again. I've done this three times {time}.",
        "How can I reset my password?",
        "I need a new password, the old one isn't working and I don't remember it.",
        "The reset password email is not coming to {email}.",
        "Can you reset my password for me? I don't know it anymore.",
        "password reset link broken on {browser}",
        "Where do I go to change my password on the web app?",
        "I reset my password but never got the confirmation email. Did it work?",
        "Forgot my password again, please help me set a new one.",
        "What are the password rules? My new password keeps getting rejected during the reset.",
        "I clicked 'Forgot password' and entered {email}, but nothing came.",
        "Please help, I need to reset the password for {email}.",
        "I don't know my password anymore and the reset email doesn't come.",
        "How do I reset a forgotten password on the {app}?",
        "Can I change my password without being logged out on all my devices?",
        "Password reset says 'user not found' for {email}, but that's my account email.",
    ],
    "bug_report": [
        "The {app} crashes every time I open the Settings tab.",
        "Photo previews show up as black squares in the web app.",
        "Search returns no results for {file} even though it's right there in the folder.",
        "After the {version} update the sidebar text is dark on a dark background, I can't read anything.",
        "Clicking 'New folder' does nothing in {browser}.",
        "The upload window freezes when I drag more than {n_files} files into it.",
        "I get error {code} when I open the Recent tab. Screenshot attached.",
        "The PDF preview of {file} shows the wrong page numbers.",
        "The mobile app crashes on launch on {os} since I updated to {version}.",
        "The storage meter says I'm using 300% of my quota, which is obviously wrong.",
        "Video playback in the browser stops after ten seconds for {file}.",
        "Buttons in the admin console overlap on smaller screens and I can't click Save.",
        "The desktop app sits at 100% CPU even when it's idle and my fan goes crazy.",
        "Sorting by 'date modified' puts the files in a random order.",
        "The 'Copy link' button copies an empty string to the clipboard.",
        "Typing in the search bar on my {device} makes the keyboard disappear.",
        "Thumbnails for HEIC photos never load in the {app}.",
        "There's a typo on the upgrade page: it says 'recieve'.",
        "The notification bell shows 12 unread, but the list is empty.",
        "The app window turns completely white after my {device} wakes up from sleep.",
        "Drag and drop between folders in the web app throws error {code}.",
        "Every entry in the activity log shows the date as 1 January 1970.",
        "The API returns HTTP 500 on the list files endpoint when a folder name contains an emoji.",
        "The zoom slider in the image preview is stuck at 100%.",
        "My name shows as 'undefined' on the profile settings page.",
        "Reproducible crash: open {file} in the viewer, press Escape, and the whole tab dies.",
        "Uploads in the web app stop at 99% with error {code} for any file over {size}.",
        "The app won't start on {os}, it just shows the splash screen forever.",
        "The shortcut Ctrl+Shift+N creates two new folders instead of one.",
        "The language setting keeps switching back to English every time I restart the app.",
        "The trash still lists files that I already deleted permanently.",
        "In the file list, scrolling jumps back to the top every few seconds.",
        "Found a bug: the 'Select all' checkbox only selects the first 50 items.",
        "Audio files play at double speed in the mobile app.",
        "Steps to reproduce: open the web app in {browser}, go to {folder}, switch to grid view and then back to list view. Expected: the list view. Actual: the page shows an empty grey box and the console logs error {code}. Happens every time on version {version}.",
        "The {app} crashes when I try to preview {file}.",
        "Bug: the rename dialog closes without saving the new name.",
        "Error {code} pops up whenever I open the settings page in {browser}.",
        "The app freezes for a minute every time I switch folders.",
        "The mobile app shows a blank screen on the home tab. Nothing loads.",
        "Clicking on a file in the web app opens a different file.",
        "The upload progress bar in the web app goes backwards.",
        "Pressing the back button in the Android app closes the whole app.",
        "Something is broken in the web app, all the icons have been missing {time}.",
        "I think I found a bug: the file count for {folder} says 0 but there are files in it.",
        "Bug report: the {app} shows error {code} when I open {folder}.",
        "The web app crashes in {browser} every time I open the Photos tab.",
        "Since version {version}, the 'Move to' dialog doesn't show any folders.",
        "The font size setting doesn't do anything in the {app}.",
        "Glitch: the file icons flicker constantly in the {app}.",
    ],
    "feature_request": [
        "Please add {feature}.",
        "It would be great if Lumen Cloud had {feature}.",
        "Any plans to support {feature}? It's the one thing I'm missing.",
        "Feature request: {feature}. Our team would use it every day.",
        "I'd happily pay a bit more on {paid_plan} for {feature}.",
        "Could you consider adding {feature} in a future release?",
        "Suggestion: let us {wish}.",
        "Why does Lumen Cloud still not have {feature}? Every competitor has it.",
        "Would love the ability to {wish}.",
        "Idea for the {app}: let users {wish}.",
        "I wish I could {wish} on my own without asking support.",
        "+1 for {feature}, I saw other people asking for it on the forum too.",
        "We're looking at {provider} mostly because they have {feature}. Please add it so we can stay.",
        "Is {feature} on the roadmap?",
        "Small request: make the file list more compact, there's too much white space.",
        "Could the admin console show storage usage per user? It would really help us plan.",
        "Please bring back the old compact view as an option, the new layout wastes a lot of space.",
        "Please allow more than 10 devices per user, three laptops and two phones fill it quickly.",
        "An option to {wish} would save me hours every week.",
        "Please make the mobile app work in landscape mode on tablets.",
        "Suggestion for the API: webhooks that fire when a file changes.",
        "could you guys add {feature} pls",
        "Not a bug, just an idea: {wish}.",
        "It would be nice to have {feature} in the {app}.",
        "Our designers keep asking for {feature}. Any chance you'll build it?",
        "Please let us {wish}. Right now we have to do it by hand.",
        "I hope you add {feature} soon, it's the only reason I haven't upgraded yet.",
        "Request: support for {feature} on {os}.",
        "Long-time user here. One thing I'd really like to see is {feature}.",
        "What about adding {feature}? I'd gladly beta test it.",
        "Make it possible to {wish}, please!",
        "Dear product team, please consider {feature} for Business customers.",
        "It'd be awesome if I could {wish} from the {app}.",
        "Your roadmap really should include {feature}.",
        "I love the product and have recommended it to friends. The one thing that keeps coming up in my team is that we'd like to {wish}. Right now we work around it with a spreadsheet, which is clumsy. Is this something you'd consider building?",
        "Please add support for {feature} in the {app}.",
        "I'd love to see {feature} in Lumen Cloud.",
        "Feature idea: {wish}.",
        "It would be really helpful to be able to {wish}.",
        "Would you consider letting users {wish}?",
        "Are you planning to add {feature} anytime soon?",
        "Could you add an option to {wish}?",
        "Request for the {app}: {feature}.",
        "Please consider adding {feature}, it would make Lumen much better for us.",
        "Can you build {feature}? I'd use it all the time.",
        "Feature request for the admin console: {feature}.",
        "I'd really appreciate it if you could add {feature}.",
        "Please give us a way to {wish}.",
        "Do you have plans to let us {wish}?",
        "One suggestion: add {feature}. It would make a big difference.",
    ],
    "data_export": [
        "How do I download all my files at once?",
        "I need a full export of my account data for a GDPR request.",
        "Is there a way to export all my files into a zip?",
        "We're migrating to {provider}. What's the best way to get our {size} of data out of Lumen Cloud?",
        "The export of {folder} stops halfway with error {code}.",
        "Can I export the list of my files with sizes and dates as a CSV?",
        "As an admin, how do I export the audit log for the last 90 days?",
        "Please send me a copy of all the personal data you hold about me.",
        "The download link for my data export expired before I could use it.",
        "How do I bulk download the {folder} folder from the web app?",
        "export my photos with the original dates and metadata pls",
        "My {paid_plan} plan ends on {date} and I want to get all my files out before that. How?",
        "Is there an API I can use to export everything for my own backups?",
        "Downloading {n_files} files one by one is insane, is there an export option?",
        "I need to export the full version history of {file} for a legal case.",
        "Can you ship my data on a physical drive? We have about {size}.",
        "The zip I get from 'Download folder' is missing all the subfolders.",
        "How do I export the member list of our Business account together with each person's storage use?",
        "How long does the account data export take? I requested it on {date}.",
        "My export archive came in several parts. How do I put them back together?",
        "For a compliance review I need to export all our shared links and who has access to each of them.",
        "Can I move all my files straight to {provider} without downloading them to my computer first?",
        "How can I export the comments people left on our files?",
        "Takeout request: I want a download of everything in my account.",
        "The data export email never arrived and I've requested it twice.",
        "Our lawyer needs an export of every file owned by a former employee, {email}.",
        "Is there a size limit when I download a folder as a zip? {folder} is about {size}.",
        "What format is the account data export in, JSON or CSV?",
        "I'm leaving Lumen Cloud, so please help me get my photos out in full resolution.",
        "As the admin, can I export all of a team member's files before we offboard them?",
        "The 'Download all' option is greyed out for my {folder} folder. How else can I export it?",
        "Is there a command-line tool for exporting my whole account?",
        "I requested an export and got a 2 KB zip with nothing in it.",
        "Does the account export include the files that are in the trash?",
        "We need a one-time export of roughly {size} of project files to hand over to a client. Downloading through the browser keeps timing out after a few GB. Is there a better way to export this much data, maybe split into parts?",
        "How can I export all of my data?",
        "I want to download a copy of everything I have stored in Lumen Cloud.",
        "Where is the export option in the account settings?",
        "How do I export my files before switching to {provider}?",
        "Can I export the {folder} folder including all its subfolders?",
        "My export failed with error {code}. I need my data by Friday.",
        "Please prepare an export of my account, I need all files and their metadata.",
        "As an admin, is there a way to download everything in our team workspace?",
        "how to download entire account as zip",
        "I need to export {n_files} files from {folder} to an external drive.",
        "How do I get all my files out of Lumen Cloud in one download?",
        "Is there a data export feature for Business admins?",
        "Can I export my whole {folder} folder to my computer in one go?",
        "I need to export everything from my account for archiving.",
        "How do I request a full data export under GDPR?",
    ],
    "sharing_permissions": [
        "How do I share the {folder} folder with my team?",
        "I shared {file} with {email} but they can't open it.",
        "How can I make a shared link view-only?",
        "Please help me remove a former contractor's access to {folder}.",
        "How do I change the password on a shared link?",
        "Can I set an expiry date on a shared link?",
        "My colleague can edit files that he should only be able to view.",
        "In the admin console, how do I stop employees from sharing links outside the company?",
        "The person I invited sees 'You don't have permission' when opening {folder}.",
        "Who can see this link? I want to be sure that only the people I send it to can open it.",
        "I need to transfer ownership of {folder} to {email} before I leave the company.",
        "Can I share a folder with someone who doesn't have a Lumen Cloud account?",
        "How do I make someone an editor instead of a viewer?",
        "unshare a folder please, I shared it with the wrong person",
        "Our guest users can download files even though we set the folder to view only.",
        "Is it possible to let people upload into a folder without seeing the other files in it?",
        "The shared link I sent shows error {code} for everyone I send it to.",
        "I'm the owner but I can't change the permissions on {folder}.",
        "How do I see everyone who has access to my files?",
        "Can I turn off downloading for a shared link?",
        "Is there a limit on sharing? It says I can't invite more than {n_small} people to a folder.",
        "A team member left. How do I revoke all of his shared links at once?",
        "Can I share a single file inside a folder without sharing the whole folder?",
        "People in my group can delete files in our shared folder. How do I prevent that?",
        "Our client can't open the link I sent, it asks them to sign in.",
        "How do I set the default link permission to 'team only' for our Business workspace?",
        "I can't see the folder {name} shared with me anymore. Did they remove my access?",
        "How do I accept an invitation to a shared folder in the {app}?",
        "Can I give edit access to just one subfolder of {folder}?",
        "I accidentally set {folder} to 'anyone with the link'. How do I make it private again?",
        "Is there a way to require people to sign in before they can view a shared link?",
        "The invitation email for the shared folder never reached {email}.",
        "How do I share with a whole group instead of adding people one at a time?",
        "Can viewers of a shared link see the version history of the file?",
        "I'd like {name} to be able to leave comments on {file} but not change anything. Right now the only choices I see are 'can view' and 'can edit'. Is there a commenter role, or some other way to set this up?",
        "How do I give someone access to {folder}?",
        "How do I change the permissions on a shared folder?",
        "Can I share {file} with view-only access?",
        "How do I stop sharing {folder} with {email}?",
        "I need to give my team edit permission on {folder}.",
        "What's the difference between viewer and editor when I share a folder?",
        "The shared link to {file} doesn't work for the person I sent it to.",
        "How do I invite people to a shared folder from the {app}?",
        "Who has access to {folder}? I want to remove some people.",
        "Can I create a shared link that only works for people in my company?",
        "How do I share a folder with view-only permission?",
        "Can I remove someone from a shared folder without them being notified?",
        "I want to limit who can reshare files in {folder}.",
        "{name} needs edit rights to {folder}, how do I give them?",
        "How do I make a shared link private again?",
    ],
    "sync_issue": [
        "Files aren't syncing between my {device} and my {device2}.",
        "The desktop app has said 'Syncing {n_files} files' {time} and nothing is moving.",
        "Changes I make on my laptop don't show up on my phone.",
        "I keep getting conflicted copies of {file}.",
        "Sync stopped with error {code} after I moved the Lumen folder to an external drive.",
        "Selective sync keeps downloading the folders I unchecked.",
        "A folder I deleted on one computer came back after the next sync.",
        "sync is stuck again. restarted twice. {os}",
        "{file} never finishes uploading from the desktop client, it keeps the blue arrows icon.",
        "My {folder} folder is empty on the web but full on my computer.",
        "Edits my colleague makes to {file} don't reach my machine until I restart the app.",
        "Camera uploads from my {device} stopped syncing on {date}.",
        "The sync icon turned red with error {code}: 'path too long'.",
        "Files I marked as available offline in the {app} are old versions.",
        "Two computers keep fighting over the same file and it flips between versions.",
        "After the {version} update every file in my Lumen folder has a cloud icon and nothing downloads.",
        "The client says 'Up to date', but half my files are missing on the other device.",
        "Our team's shared folder isn't syncing to the computers of new members.",
        "Sync is extremely slow, {size} of new files and it has been running {time}.",
        "Files with special characters in the name, like #, are skipped when syncing.",
        "The app shows 'Waiting to sync' forever on {os}.",
        "I renamed a folder and now there are two copies of it on every device.",
        "Why does syncing pause whenever my laptop is on battery? I want it to keep running.",
        "Lots of '.lumen-tmp' files appear in my folders and never finish syncing.",
        "I moved files into {folder} on my phone, but the desktop still shows them in the old place.",
        "Sync starts again from 0% every time my laptop wakes up.",
        "Files I save from Photoshop show up as 0 byte files on my other devices.",
        "Since {date} nothing I add on the web shows up in my local Lumen folder.",
        "My edits to {file} were overwritten by an older version synced from my other computer.",
        "Sync error 'file is locked by another process' for {file}.",
        "The phone shows the file, the laptop doesn't, and both say everything is synced.",
        "The folder on our office NAS stopped syncing with Lumen after we changed the router.",
        "Syncing has been stuck on 'Indexing...' since I added {n_files} photos.",
        "LAN sync doesn't seem to work, everything goes through the internet and it's slow.",
        "My work PC and my home {device} used to stay in sync, but {time} the desktop client shows 'Sync paused: error {code}'. Pausing and resuming doesn't help, and the files I changed at home are still the old versions at work.",
        "My files aren't syncing.",
        "Sync has not been working on my {device} {time}.",
        "The desktop app won't sync {folder} anymore.",
        "Why is my {device} not syncing with the web app?",
        "My files are out of sync between my two computers.",
        "Sync error {code} on {os}, nothing uploads.",
        "The Lumen folder on my computer stopped updating {time}.",
        "new files dont sync to my phone",
        "Sync keeps failing for {file}, the other files are fine.",
        "I added files on my {device} but they don't show up anywhere else.",
        "The desktop client stopped syncing after I updated to {version}.",
        "Sync has been stuck at 'Preparing...' {time}.",
        "My phone and laptop show different versions of {file}, sync seems broken.",
        "Files won't sync on {os}, the client shows error {code}.",
        "How do I fix sync when the desktop app says 'Can't sync {n_files} items'?",
    ],
    "security_report": [
        "I got an email about a new sign-in from {city} and it wasn't me.",
        "I think my account was hacked. There are files I never uploaded.",
        "I received a phishing email pretending to be Lumen Cloud that asks for my password.",
        "I found a vulnerability: I can see other users' thumbnails by changing the ID in the URL.",
        "There's an unknown device called '{device2}' in my list of active sessions.",
        "Someone deleted a lot of my files, and it wasn't me or anyone I share with.",
        "I want to report a security issue responsibly. Who should I contact?",
        "My password was changed without my knowledge and now I'm getting 2FA prompts I didn't request.",
        "Your API leaks other users' email addresses in the error message for {code}.",
        "Suspicious login alert from an IP in {city}. Please check my account.",
        "A shared link that nobody on our team created is going around with our internal documents in it.",
        "I'm getting 2FA codes by SMS that I never asked for. Is someone trying to get into my account?",
        "Ransomware encrypted the files on my {device} and the encrypted versions are now in Lumen. Please help.",
        "Report: stored XSS in the file comment field, the payload runs for other viewers.",
        "Someone is using the Lumen Cloud logo on a fake login page at {url}.",
        "An employee who left still has an active session and I suspect he's taking data. How do I kill it right now?",
        "Files were downloaded from my account at 3am while I was asleep.",
        "The email address on my account was changed to one I don't recognize.",
        "I clicked a link in a fake Lumen email and typed in my password. What should I do?",
        "Possible breach: our audit log shows {n_files} files accessed by a user nobody knows.",
        "Bug bounty submission: the session token is not invalidated after logout.",
        "There are API tokens on my account that I didn't create.",
        "I keep receiving password reset emails I didn't request, three of them today.",
        "Someone made themselves an admin in our Business workspace without approval.",
        "I got a text from 'Lumen Support' asking me to read them my verification code. Is that really you?",
        "Open redirect on your sign-in page, details and proof of concept below.",
        "My antivirus detected malware in a file that was shared with me through Lumen: {file}.",
        "my account is compromised, lock it NOW",
        "The desktop app stores my access token in plain text in a config file. That seems unsafe.",
        "My login history shows sign-ins from {browser} on Linux, but I only use a Mac.",
        "Please investigate: there are unknown devices on my account and someone changed my recovery phone.",
        "My ex knows my password and has been reading my files.",
        "I'd like to report that your mobile app accepts any TLS certificate, so traffic can be intercepted.",
        "All my shared folders were suddenly re-shared with an unknown gmail address.",
        "Our security team flagged traffic from a Lumen Cloud client on {os} to a server that doesn't belong to you. Could one of your update servers have been compromised, or is this expected? We have isolated the machine for now and can send logs.",
        "I think someone else has access to my account.",
        "I want to report suspicious activity on my account.",
        "There was a login to my account from {city} that I didn't make. Please help.",
        "Someone logged into my account and changed my settings.",
        "I got a phishing email that looks like it's from Lumen Cloud, with a link to {url}.",
        "Security issue: I found a way to open other people's files without permission.",
        "My account was compromised. Please secure it and tell me what was accessed.",
        "Unknown activity on my account: files renamed and shared links created that I didn't make.",
        "I'd like to report a security vulnerability in your {app}.",
        "Is this email real? It says my account will be deleted unless I log in at {url}.",
        "I think my account has been hacked, there are logins I don't recognize.",
        "Reporting a security problem: shared link IDs are sequential, so anyone can guess them.",
        "Someone accessed my files from a device I don't own.",
        "I received an email claiming to be Lumen Cloud that asks me to verify my account at {url}. Is it a scam?",
        "There's an active session from {city} on my account. I've never been there. Please check.",
    ],
    "plan_upgrade": [
        "How do I upgrade from {from_plan} to {to_plan}?",
        "I'm out of space on Free. What's the cheapest plan with more storage?",
        "We need to add {seats} more seats to our Business account.",
        "Can I try {to_plan} before I pay for it?",
        "What's the difference between Plus and Pro? I'm thinking of moving up.",
        "upgrade me to pro please",
        "If I upgrade in the middle of the month, do I pay the full price for {to_plan}?",
        "Our team is growing to {seats} people, which plan do you recommend we move to?",
        "Can I buy extra storage without switching to a higher plan?",
        "I want to go from {from_plan} to {to_plan} but keep my current billing date.",
        "Does upgrading to {to_plan} give me the longer version history right away?",
        "I need more than {size}. What are my options for upgrading?",
        "Five of us have separate Pro accounts. Can we combine them into one Business team?",
        "The upgrade button throws error {code} when I try to go to {to_plan}.",
        "How much would it cost to move our {seats} person team up to Business?",
        "I'd like to upgrade to a family plan so my kids get their own storage.",
        "Is there an education discount if I upgrade to Pro?",
        "ready to go premium, which tier has the biggest upload limit?",
        "Please upgrade our workspace to Business so we get the admin console and SSO.",
        "Can I upgrade only my own account while the rest of my team stays on Plus?",
        "I hit the device limit on {from_plan}. Which plan allows more devices?",
        "Please raise our seat count from {seats} to {seats2}.",
        "Will my files and shared links stay the same after I switch up to {to_plan}?",
        "I want to upgrade my Free account but the checkout page doesn't list {to_plan}.",
        "We need SSO. Is that only available on Business? If so, we'd like to upgrade.",
        "How do I move my personal Pro account into my company's Business plan?",
        "Our Business trial ends on {date}. How do we turn it into a paid subscription?",
        "Can I get more storage on {from_plan}? I'm at 99% already.",
        "Could you send a quote for upgrading {company} to Business with {seats} users?",
        "Will I lose anything if I jump straight from Free to Business?",
        "Thinking about upgrading. Does {to_plan} come with priority support?",
        "Please add 1 TB of extra storage to my plan.",
        "If I upgrade to {to_plan} today, when does the bigger storage limit kick in?",
        "My storage is full and uploads are blocked, so I want to move to a bigger plan.",
        "I've been on {from_plan} for a while and my photo library has grown past the limit. I'd like to move up to {to_plan}, but I'm not sure whether to pick monthly or yearly. Which is better value, and can I switch between them later?",
        "I want to upgrade my plan.",
        "How do I upgrade to {to_plan}?",
        "Can I upgrade from {from_plan} to {to_plan} in the {app}?",
        "We'd like to move our team to the Business plan.",
        "I need more storage, how do I upgrade?",
        "What do I get if I upgrade to {to_plan}?",
        "how much is it to upgrade to business for {seats} users",
        "Please switch my account to {to_plan}, I need the extra space.",
        "Is it possible to upgrade for just one month?",
        "Add {seats} seats to our team plan please.",
        "I'd like to upgrade from {from_plan}, which plan gives me the most storage?",
        "How do I add more users to our Business plan?",
        "Can I move up to {to_plan} and only pay the difference?",
        "What happens to my current {from_plan} subscription when I upgrade?",
        "We want to upgrade our team to get SSO and admin controls.",
    ],
}


# ---------------------------------------------------------------------------
# Slot filling
# ---------------------------------------------------------------------------
SLOT_RE = re.compile(r"\{([a-z_]+?)(\d?)\}")


class Filler:
    """Fills ``{slot}`` placeholders for one example.

    Values are consistent inside one example (``{plan}`` twice gives the same
    value), ``{device2}`` is a different value from the ``device`` pool, and
    test-only values are used only when ``split == "test"``.
    """

    def __init__(self, rng: random.Random, split: str):
        self.rng = rng
        self.split = split
        self.ctx: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------
    def _pool(self, base: str) -> list[str]:
        shared, test_only = SLOTS[base]
        if self.split == "test" and test_only and self.rng.random() < TEST_ONLY_PROB:
            return test_only
        return shared

    def _pick(self, base: str, avoid: set[str]) -> str:
        pool = [v for v in self._pool(base) if v not in avoid]
        if not pool:
            pool = [v for v in SLOTS[base][0] if v not in avoid]
        return self.rng.choice(pool)

    def _generated(self, base: str) -> str | None:
        rng = self.rng
        if base == "code":
            return f"LC-{rng.randint(1000, 9999)}"
        if base == "date":
            style = rng.random()
            month = rng.choice(MONTHS)
            day = rng.randint(1, 28)
            if style < 0.5:
                return f"{month} {day}"
            if style < 0.75:
                suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(day, "th")
                return f"the {day}{suffix}"
            return f"{day:02d}/{MONTHS.index(month) + 1:02d}"
        if base == "version":
            return f"{rng.randint(3, 5)}.{rng.randint(0, 14)}.{rng.randint(0, 9)}"
        if base == "n_files":
            return str(rng.choice([rng.randint(12, 99), rng.randint(100, 999),
                                   rng.randint(1000, 9000)]))
        if base == "n_small":
            return str(rng.randint(3, 9))
        if base == "seats":
            return str(rng.randint(3, 40))
        if base == "year":
            return str(rng.randint(2014, 2023))
        if base == "email":
            name = self._pick("name", set()).lower()
            domain = self.rng.choice(self._pick_domains())
            sep = rng.choice([".", "_", ""])
            tail = rng.choice(["", str(rng.randint(1, 99))])
            return f"{name}{sep}{rng.choice(['k', 'm', 'work', 'r', 'lee'])}{tail}@{domain}"
        return None

    def _pick_domains(self) -> list[str]:
        shared, test_only = EMAIL_DOMAINS
        if self.split == "test" and self.rng.random() < TEST_ONLY_PROB:
            return test_only
        return shared

    def value(self, base: str, index: str) -> str:
        key = base + index
        if key in self.ctx:
            return self.ctx[key]
        if base == "plan" and ("paid_plan" in self.ctx or "from_plan" in self.ctx):
            # keep "I'm on the X plan" consistent with the plan in the ticket
            val = self.ctx.get("paid_plan") or self.ctx["from_plan"]
        elif base == "from_plan":
            val = self.rng.choice(PLAN_ORDER[:-1])
        elif base == "to_plan":
            lowest = PLAN_ORDER.index(self.ctx.get("from_plan", "Free")) + 1
            val = self.rng.choice(PLAN_ORDER[lowest:])
        elif base == "seats" and index:
            val = str(int(self.ctx.get("seats", "5")) + self.rng.randint(2, 25))
        else:
            val = self._generated(base)
            if val is None:
                avoid = {v for k, v in self.ctx.items() if k.rstrip("0123456789") == base}
                val = self._pick(base, avoid)
        # Slot values may themselves contain slots (e.g. "Regards, {name}").
        val = self.fill(val)
        self.ctx[key] = val
        return val

    def fill(self, text: str) -> str:
        return SLOT_RE.sub(lambda m: self.value(m.group(1), m.group(2)), text)


# ---------------------------------------------------------------------------
# Label-neutral noise
# ---------------------------------------------------------------------------
KEYBOARD_NEIGHBOURS = {
    "a": "sq", "e": "wr", "i": "uo", "o": "ip", "n": "bm", "s": "ad",
    "t": "ry", "r": "et", "l": "k", "c": "xv", "m": "n", "d": "sf",
}


def add_typo(rng: random.Random, word: str) -> str:
    i = rng.randint(1, len(word) - 2)
    kind = rng.random()
    if kind < 0.35:  # swap two neighbouring letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind < 0.65:  # drop a letter
        return word[:i] + word[i + 1:]
    if kind < 0.85:  # double a letter
        return word[:i] + word[i] + word[i:]
    ch = word[i].lower()
    if ch in KEYBOARD_NEIGHBOURS:  # hit a neighbouring key
        return word[:i] + rng.choice(KEYBOARD_NEIGHBOURS[ch]) + word[i + 1:]
    return word[:i] + word[i + 1:]


def add_noise(rng: random.Random, text: str, filler: Filler) -> str:
    # neutral context sentences
    if rng.random() < 0.22:
        extra = filler.fill(rng.choice(SLOTS["filler"][0]))
        text = f"{extra} {text}" if rng.random() < 0.4 else f"{text} {extra}"
    if rng.random() < 0.08:
        text = f"{text} {rng.choice(SLOTS['rant'][0])}"
    # greeting / sign-off
    if rng.random() < 0.25:
        greeting = rng.choice(SLOTS["greeting"][0])
        first = text.split(" ")[0]
        if not re.match(r"(hi|hello|hey|dear)\b", first, re.I):
            if (greeting.endswith(",") and rng.random() < 0.6 and first.isalpha()
                    and first[1:].islower() and first != "I"
                    and first not in SLOTS["name"][0] + SLOTS["name"][1]):
                text = text[0].lower() + text[1:]
            text = f"{greeting} {text}"
    if rng.random() < 0.2:
        text = f"{text} {filler.fill(rng.choice(SLOTS['signoff'][0]))}"
    # typos in one or two longer words
    if rng.random() < 0.18:
        words = text.split(" ")
        candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
        for i in rng.sample(candidates, k=min(len(candidates), rng.choice([1, 1, 2]))):
            words[i] = add_typo(rng, words[i])
        text = " ".join(words)
    # casing / punctuation
    r = rng.random()
    if r < 0.18:
        text = text.lower()
    elif r < 0.22:
        text = text.replace("'", "")
    if rng.random() < 0.12 and text[-1] in ".!":
        text = text[:-1]
    return text


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


# ---------------------------------------------------------------------------
# Template assignment and generation
# ---------------------------------------------------------------------------
def assign_templates(rng: random.Random) -> dict[str, dict[str, list[int]]]:
    """Return {label: {split: [template indices]}}; every template in one split."""
    assignment: dict[str, dict[str, list[int]]] = {}
    for label in LABELS:
        idx = list(range(len(TEMPLATES[label])))
        rng.shuffle(idx)
        n = len(idx)
        n_train = round(n * TEMPLATE_SHARE["train"])
        n_val = round(n * TEMPLATE_SHARE["validation"])
        assignment[label] = {
            "train": sorted(idx[:n_train]),
            "validation": sorted(idx[n_train:n_train + n_val]),
            "test": sorted(idx[n_train + n_val:]),
        }
    return assignment


def generate(rng: random.Random, assignment, seen: set[str], split: str, label: str,
             n: int) -> list[dict]:
    template_ids = list(assignment[label][split])
    rng.shuffle(template_ids)
    rows: list[dict] = []
    i = 0
    while len(rows) < n:
        for attempt in range(200):
            # rotate through templates so each gets a near-equal share,
            # moving on to the next one if a template is exhausted
            tid = template_ids[(i + attempt // 25) % len(template_ids)]
            filler = Filler(rng, split)
            text = add_noise(rng, filler.fill(TEMPLATES[label][tid]), filler)
            key = normalise(text)
            if key not in seen:
                seen.add(key)
                rows.append({"text": text, "label": label, "_template": tid})
                break
        else:
            raise RuntimeError(f"could not create a unique text for {label}/{split}")
        i += 1
    return rows


def build() -> dict[str, list[dict]]:
    for label in LABELS:
        texts = TEMPLATES[label]
        assert len(texts) == len(set(texts)), f"duplicate template in {label}"
    all_templates = [t for label in LABELS for t in TEMPLATES[label]]
    assert len(all_templates) == len(set(all_templates)), "template shared by two labels"

    rng = random.Random(SEED)
    assignment = assign_templates(rng)
    seen: set[str] = set()
    data: dict[str, list[dict]] = {}
    # generate test first so its held-out slot values get first pick
    for split in ("test", "validation", "train"):
        per_label = SPLIT_SIZES[split] // len(LABELS)
        rows: list[dict] = []
        for label in LABELS:
            rows.extend(generate(rng, assignment, seen, split, label, per_label))
        rng.shuffle(rows)
        data[split] = rows

    # sanity checks: template-disjoint splits and no text shared by two splits
    for label in LABELS:
        used = {s: {r["_template"] for r in data[s] if r["label"] == label} for s in SPLITS}
        assert not (used["train"] & used["validation"]), label
        assert not (used["train"] & used["test"]), label
        assert not (used["validation"] & used["test"]), label
    keys = [normalise(r["text"]) for s in SPLITS for r in data[s]]
    assert len(keys) == len(set(keys)), "duplicate text"
    data["_assignment"] = assignment  # type: ignore[assignment]
    return data


def main() -> None:
    data = build()
    assignment = data.pop("_assignment")  # type: ignore[arg-type]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        path = OUT_DIR / f"{split}.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for row in data[split]:
                fh.write(json.dumps({"text": row["text"], "label": row["label"]},
                                    ensure_ascii=False) + "\n")
        counts = Counter(r["label"] for r in data[split])
        print(f"{split:<10} {len(data[split]):>5} rows -> {path}")
        print("           " + ", ".join(f"{k}={counts[k]}" for k in LABELS))
    n_tpl = {s: sum(len(assignment[l][s]) for l in LABELS) for s in SPLITS}
    print("templates per split:", n_tpl)


if __name__ == "__main__":
    main()
