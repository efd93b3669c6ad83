-- One database per service: they share nothing but the event contracts.
CREATE DATABASE voucher;
CREATE DATABASE taxcredit;
CREATE DATABASE fund;
CREATE DATABASE oversight;
