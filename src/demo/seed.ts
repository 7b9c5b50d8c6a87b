/**
 * The demo database: a small shop with the kinds of personal data agents should not see raw
 * (emails, social security numbers, phone and card numbers, birth dates, salaries), a view over
 * them, and tables without any (orders by amount and status). Every value is invented: the
 * card numbers are the well-known test numbers, the SSNs are in the never-issued 900 range.
 */
export const SEED_SQL = `
CREATE TABLE customers (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  phone       text,
  ssn         text,
  card_number text,
  birth_date  date,
  city        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
  id          serial PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  total       numeric(10, 2) NOT NULL CHECK (total >= 0),
  status      text NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'refunded')),
  created_at  timestamptz NOT NULL
);

CREATE TABLE employees (
  id          serial PRIMARY KEY,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  title       text NOT NULL,
  department  text NOT NULL,
  salary      numeric(10, 2) NOT NULL,
  ssn         text,
  hired_on    date NOT NULL
);

-- Reading PII through a view is masked too: pgwarden follows the view to customers.
CREATE VIEW customer_contacts AS
  SELECT id, name, email, phone, city FROM customers;

INSERT INTO customers (name, email, phone, ssn, card_number, birth_date, city) VALUES
  ('Alice Martin',    'alice.martin@example.com',   '+1-202-555-0143', '900-12-3456', '4111 1111 1111 1111', '1986-03-14', 'Boston'),
  ('Bruno Silva',     'bruno.silva@example.com',    '+1-202-555-0178', '900-23-4567', '5555 5555 5555 4444', '1991-07-02', 'Chicago'),
  ('Chen Wei',        'chen.wei@example.net',       '+1-415-555-0109', '900-34-5678', '3782 822463 10005',   '1979-11-23', 'San Francisco'),
  ('Dana Okafor',     'dana.okafor@example.org',    '+1-646-555-0191', '900-45-6789', '6011 1111 1111 1117', '1994-01-30', 'New York'),
  ('Emil Novak',      'emil.novak@example.com',     '+1-312-555-0122', '900-56-7890', '4012 8888 8888 1881', '1983-05-19', 'Chicago'),
  ('Farah Haddad',    'farah.haddad@example.com',   '+1-617-555-0150', '900-67-8901', '5105 1051 0510 5100', '1988-09-08', 'Boston'),
  ('Gustavo Reyes',   'gustavo.reyes@example.net',  '+1-305-555-0117', '900-78-9012', '4111 1111 1111 1111', '1975-12-01', 'Miami'),
  ('Hana Sato',       'hana.sato@example.org',      '+1-206-555-0164', '900-89-0123', '3056 9309 0259 04',   '1999-04-27', 'Seattle'),
  ('Ivan Petrov',     'ivan.petrov@example.com',    '+1-512-555-0138', '900-90-1234', '6011 0009 9013 9424', '1990-02-11', 'Austin'),
  ('Julia Costa',     'julia.costa@example.com',    '+1-303-555-0185', '900-01-2345', '5555 5555 5555 4444', '1985-08-16', 'Denver'),
  ('Kofi Mensah',     'kofi.mensah@example.net',    '+1-404-555-0126', '900-13-5791', '4012 8888 8888 1881', '1993-10-05', 'Atlanta'),
  ('Lena Fischer',    'lena.fischer@example.org',   '+1-503-555-0199', '900-24-6802', '3782 822463 10005',   '1981-06-21', 'Portland');

-- Thirty orders spread over the customers and the last two months.
INSERT INTO orders (customer_id, total, status, created_at)
SELECT 1 + (n * 7) % 12,
       round((19.99 + (n * 37) % 250 + (n % 3) * 0.5)::numeric, 2),
       (ARRAY['pending', 'paid', 'shipped', 'refunded'])[1 + (n * 5) % 4],
       timestamptz '2026-01-05 09:00:00+00' + n * interval '1 day 7 hours'
FROM generate_series(1, 30) AS n;

INSERT INTO employees (name, email, title, department, salary, ssn, hired_on) VALUES
  ('Maya Lindqvist', 'maya.lindqvist@shop.example',  'Head of Engineering',   'engineering', 182000.00, '900-11-2233', '2017-02-01'),
  ('Noah Brennan',   'noah.brennan@shop.example',    'Backend Engineer',      'engineering', 134500.00, '900-22-3344', '2020-09-14'),
  ('Olivia Grant',   'olivia.grant@shop.example',    'Data Analyst',          'analytics',   98000.00,  '900-33-4455', '2021-04-06'),
  ('Pedro Alves',    'pedro.alves@shop.example',     'Support Lead',          'support',     76500.00,  '900-44-5566', '2019-11-18'),
  ('Quinn Harper',   'quinn.harper@shop.example',    'Support Agent',         'support',     58200.00,  '900-55-6677', '2023-01-09'),
  ('Rosa Jimenez',   'rosa.jimenez@shop.example',    'HR Business Partner',   'people',      91000.00,  '900-66-7788', '2018-07-23'),
  ('Sam Whitfield',  'sam.whitfield@shop.example',   'Database Administrator','engineering', 141000.00, '900-77-8899', '2016-05-30'),
  ('Tara Nguyen',    'tara.nguyen@shop.example',     'Finance Manager',       'finance',     118000.00, '900-88-9900', '2019-03-12');
`;
